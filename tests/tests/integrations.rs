//! The integration gateway as hospitals' and dealers' systems use it, on real sockets: HL7 v2
//! over MLLP (TLS with a client certificate, and plain TCP), FHIR R4 and signed webhooks over
//! HTTP(S), notifications to a local receiver. Every accepted message is checked in the core
//! services (a claimable callback, a telephony record), every refused one against the log
//! (nothing written).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use callback_integration_gateway::webhooks::sign;
use callback_kit::ServiceKind;
use callback_proto::v1::complaint_routing_client::ComplaintRoutingClient;
use callback_proto::v1::integration_gateway_client::IntegrationGatewayClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ComplaintCustomer, FileComplaintRequest, GetIntegrationSettingsRequest, ListDeadLettersRequest,
    PublishIntegrationSettingsRequest, PublishPolicyRequest, PublishRoutingRulesRequest,
    PublishTenantRequest, RetryDeadLetterRequest,
};
use callback_tests::wire::{field, http, MllpClient, SmtpReceiver};
use callback_tests::{eventually, token, System};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

const HOSPITAL: &str = "szrmyy";
const DEALER: &str = "dealer-sz";

const A03: &str =
    include_str!("../../services/integration-gateway/samples/hl7/adt-a03-discharge.hl7");
const A03_V23: &str =
    include_str!("../../services/integration-gateway/samples/hl7/adt-a03-minimal-v23.hl7");
const A13: &str =
    include_str!("../../services/integration-gateway/samples/hl7/adt-a13-cancel-discharge.hl7");
const S12: &str =
    include_str!("../../services/integration-gateway/samples/hl7/siu-s12-appointment.hl7");

/// A sample as it travels (segments ended by CR), its times moved to `at` (Shanghai local)
/// and its control id set.
fn message(sample: &str, control_id: &str, at: DateTime<Utc>) -> String {
    let local = at
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y%m%d%H%M%S")
        .to_string();
    let mut text = sample.trim_end().replace('\n', "\r");
    for old in ["MSG20261128163512001", "MSG20261128171045007", "|00042317|"] {
        let new = if old.starts_with('|') {
            format!("|{control_id}|")
        } else {
            control_id.to_owned()
        };
        text = text.replace(old, &new);
    }
    for old in [
        "20261128163512",
        "20261128163500",
        "20261128163000",
        "20261128171045",
        "20261128171040",
        "20261129081500",
        "20261130102233",
        "20261129081455",
    ] {
        text = text.replace(old, &local);
    }
    text
}

fn an_hour_ago() -> DateTime<Utc> {
    Utc::now() - chrono::Duration::hours(1)
}

async fn publish_core(system: &System) {
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    for tenant in [HOSPITAL, DEALER] {
        let settings = json!({
            "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                         "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
            "pools": ["desk"], "agents": [{"agent_id": "nurse-1", "pools": ["desk"]}]
        });
        scheduling
            .publish_tenant(PublishTenantRequest {
                tenant_id: tenant.into(),
                settings_json: settings.to_string(),
            })
            .await
            .unwrap();
    }
    let timing =
        json!({"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}});
    let policies = [
        (
            HOSPITAL,
            json!({"policy_id": "discharge", "name": "出院回访", "trigger": {"event_type": "patient.discharged"},
                          "cancel_on": ["patient.discharge_cancelled"],
                          "steps": [{"name": "first", "owner": {"kind": "pool", "pool": "desk"}, "timing": timing}]}),
        ),
        (
            HOSPITAL,
            json!({"policy_id": "appointment", "name": "复诊提醒", "trigger": {"event_type": "appointment.booked"},
                          "steps": [{"name": "remind", "owner": {"kind": "pool", "pool": "desk"}, "timing": timing}]}),
        ),
        (
            DEALER,
            json!({"policy_id": "sale", "name": "新车交付回访", "trigger": {"event_type": "vehicle.sold"},
                        "steps": [{"name": "first", "owner": {"kind": "pool", "pool": "desk"}, "timing": timing}]}),
        ),
    ];
    for (tenant, policy) in policies {
        scheduling
            .publish_policy(PublishPolicyRequest {
                tenant_id: tenant.into(),
                policy_json: policy.to_string(),
            })
            .await
            .unwrap();
    }
}

fn gateway(system: &System) -> IntegrationGatewayClient<Channel> {
    IntegrationGatewayClient::new(system.channel(ServiceKind::IntegrationGateway))
}

async fn publish_gateway(system: &System, tenant: &str, settings: Value) {
    gateway(system)
        .publish_integration_settings(PublishIntegrationSettingsRequest {
            tenant_id: tenant.into(),
            settings_json: settings.to_string(),
        })
        .await
        .unwrap();
}

/// Facts and callbacks in the log: what a refused message must not change.
async fn written(system: &System) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_category IN ('business_event', 'callback', 'telephony')")
        .fetch_one(&system.db.pool)
        .await
        .unwrap()
}

async fn scheduled(system: &System, tenant: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'CallbackScheduled' AND metadata->>'tenant_id' = $1",
    )
    .bind(tenant)
    .fetch_one(&system.db.pool)
    .await
    .unwrap()
}

fn secrets_file(name: &str, secrets: Value) -> String {
    let path = std::env::temp_dir().join(format!(
        "callback-gateway-{name}-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, secrets.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hl7_discharge_over_mllp_becomes_one_claimable_callback() {
    let system = System::start(&[
        ServiceKind::Scheduling,
        ServiceKind::CallLogging,
        ServiceKind::IntegrationGateway,
    ])
    .await;
    publish_core(&system).await;
    publish_gateway(
        &system,
        HOSPITAL,
        json!({"hl7": {"senders": [{"application": "HIS", "facility": "SZRMYY"}]}}),
    )
    .await;

    // Over TLS with a client certificate (the harness's, mapped to *:integration); the frame
    // split across three writes, one cut inside the end bytes.
    let mut sender = MllpClient::tls(system.mllp_addr).await;
    let discharge = message(A03, "MSG-0001", an_hour_ago());
    let framed = callback_integration_gateway::mllp::frame(&discharge);
    let cut = framed.len() - 1;
    sender.write(&framed[..40]).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    sender.write(&framed[40..cut]).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    sender.write(&framed[cut..]).await;
    let ack = sender.ack().await;
    assert_eq!(field(&ack, "MSA", 1), "AA", "{ack}");
    assert_eq!(field(&ack, "MSA", 2), "MSG-0001");
    assert_eq!(field(&ack, "MSH", 9), "ACK^A03^ACK");
    assert_eq!(field(&ack, "MSH", 12), "2.4");
    assert_eq!(
        (field(&ack, "MSH", 5), field(&ack, "MSH", 6)),
        ("HIS".into(), "SZRMYY".into())
    );
    assert_eq!(scheduled(&system, HOSPITAL).await, 1);

    // The callback is claimable, with the patient's contact for the agent.
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let claimed = callback_tests::claim(&mut scheduling, HOSPITAL, "nurse-1")
        .await
        .expect("a callback is due");
    let subject = claimed.subject.unwrap();
    assert_eq!(subject.subject_id, "P0012345");
    assert_eq!(subject.name, "张伟");
    assert_eq!(subject.phones.len(), 2);
    assert_eq!(subject.department, "CARD");

    // A resend (the sender never saw the ACK) is acknowledged again and schedules nothing.
    let ack = sender.exchange(&discharge).await;
    assert_eq!(field(&ack, "MSA", 1), "AA", "{ack}");
    assert_eq!(scheduled(&system, HOSPITAL).await, 1);

    // Two messages coalesced into one write get two ACKs, in order: an older sender's v2.3
    // discharge (its own patient) and the cancellation of the first discharge.
    let mut both =
        callback_integration_gateway::mllp::frame(&message(A03_V23, "OLD-7", an_hour_ago()));
    both.extend(callback_integration_gateway::mllp::frame(&message(
        A13,
        "MSG-0002",
        Utc::now(),
    )));
    publish_gateway(
        &system,
        HOSPITAL,
        json!({"hl7": {"senders": [{"application": "HIS", "facility": "SZRMYY"}, {"application": "HIS", "facility": "XYZYY"}]}}),
    )
    .await;
    sender.write(&both).await;
    let first = sender.ack().await;
    let second = sender.ack().await;
    assert_eq!(
        (field(&first, "MSA", 1), field(&first, "MSA", 2)),
        ("AA".into(), "OLD-7".into()),
        "{first}"
    );
    assert_eq!(
        field(&first, "MSH", 9),
        "ACK^A03",
        "2.3 has no message structure: {first}"
    );
    assert_eq!(
        (field(&second, "MSA", 1), field(&second, "MSA", 2)),
        ("AA".into(), "MSG-0002".into()),
        "{second}"
    );
    assert_eq!(scheduled(&system, HOSPITAL).await, 2);
    // A dental practice's SIU^S12 (v2.5.1) books a follow-up: the appointment policy.
    publish_gateway(
        &system,
        HOSPITAL,
        json!({"hl7": {"senders": [{"application": "HIS", "facility": "SZRMYY"}, {"application": "HIS", "facility": "XYZYY"},
                                   {"application": "DENTAL-PMS", "facility": "KQMZ01"}]}}),
    )
    .await;
    let ack = sender
        .exchange(&message(S12, "unused", an_hour_ago()))
        .await;
    assert_eq!(
        (field(&ack, "MSA", 1), field(&ack, "MSA", 2)),
        ("AA".into(), "A8812-20261130-0042".into()),
        "{ack}"
    );
    assert_eq!(field(&ack, "MSH", 9), "ACK^S12^ACK");
    assert_eq!(field(&ack, "MSH", 12), "2.5.1");
    assert_eq!(scheduled(&system, HOSPITAL).await, 3);
    // The cancellation ended the first patient's callback.
    let (status, _) =
        callback_tests::callback_state(&mut scheduling, HOSPITAL, &claimed.callback_id).await;
    assert_eq!(status, "cancelled");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_hl7_messages_get_the_right_ack_and_write_nothing() {
    let system = System::start_with_settings(
        &[
            ServiceKind::Scheduling,
            ServiceKind::CallLogging,
            ServiceKind::IntegrationGateway,
        ],
        &[("CALLBACK_MLLP_TLS", Some("off".into()))],
    )
    .await;
    publish_core(&system).await;
    publish_gateway(
        &system,
        HOSPITAL,
        json!({"hl7": {"senders": [{"application": "HIS", "facility": ""}]}}),
    )
    .await;
    let mut sender = MllpClient::plain(system.mllp_addr).await;
    let before = written(&system).await;
    let valid = message(A03, "MSG-R1", an_hour_ago());

    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("garbage", "this is not HL7".into(), "AR", ""),
        (
            "unknown trigger",
            valid.replace("ADT^A03^ADT_A03", "ADT^A01^ADT_A01"),
            "AR",
            "201",
        ),
        (
            "unknown type",
            valid.replace("ADT^A03^ADT_A03", "ORU^R01^ORU_R01"),
            "AR",
            "200",
        ),
        (
            "missing PID-3",
            valid.replace("P0012345^^^SZRMYY^MR~440301195603121234^^^CHN^NNCHN", ""),
            "AR",
            "101",
        ),
        (
            "unsupported version",
            valid.replace("|P|2.4|", "|P|2.7|"),
            "AR",
            "203",
        ),
        (
            "unknown sender",
            valid.replace("|HIS|SZRMYY|", "|LIS|SZRMYY|"),
            "AR",
            "207",
        ),
        (
            "bad discharge time",
            valid.replace(&valid.split('|').nth(6).unwrap().to_owned(), "2026-13-45"),
            "AR",
            "",
        ),
        (
            "unknown visit type",
            valid.replace("PV1|1|I|", "PV1|1|Z|"),
            "AR",
            "103",
        ),
    ];
    for (case, text, code, error) in cases {
        let ack = sender.exchange(&text).await;
        assert_eq!(field(&ack, "MSA", 1), code, "{case}: {ack}");
        if !error.is_empty() {
            assert!(
                ack.contains(&format!("{error}^")) || ack.contains(&format!("{error}&")),
                "{case}: ERR {error} in {ack}"
            );
        }
        assert!(
            !field(&ack, "MSA", 3).is_empty(),
            "{case}: a reason in MSA-3: {ack}"
        );
    }
    let missing = sender
        .exchange(&valid.replace("P0012345^^^SZRMYY^MR~440301195603121234^^^CHN^NNCHN", ""))
        .await;
    assert!(
        field(&missing, "MSA", 3).contains("PID-3"),
        "the field is named: {missing}"
    );
    assert!(missing.contains("ERR|PID^1^3^101"), "{missing}");
    assert_eq!(
        written(&system).await,
        before,
        "refused messages write nothing"
    );
    // The connection still serves.
    assert_eq!(field(&sender.exchange(&valid).await, "MSA", 1), "AA");

    // An oversized frame closes the connection (and writes nothing).
    let mut big = MllpClient::plain(system.mllp_addr).await;
    big.write(&[0x0b]).await;
    big.write(&vec![b'x'; 1_100_000]).await;
    assert!(
        big.closed().await,
        "an oversized frame closes the connection"
    );

    // Settings that claim another tenant's sender, or are invalid, are refused whole.
    let refused = gateway(&system)
        .publish_integration_settings(PublishIntegrationSettingsRequest {
            tenant_id: DEALER.into(),
            settings_json: json!({"hl7": {"senders": [{"application": "HIS", "facility": ""}]}})
                .to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("hl7.senders[0]"),
        "{}",
        refused.message()
    );
    let refused = gateway(&system)
        .publish_integration_settings(PublishIntegrationSettingsRequest {
            tenant_id: DEALER.into(),
            settings_json: json!({"hl7": {"messages": {"ADT^A03": {"event_type": "patient.discharged", "subject_id": ["PID-0"]}}}}).to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("settings_json.hl7.messages.ADT^A03.subject_id[0]"),
        "{}",
        refused.message()
    );
    // The defaults are shown.
    let shown = gateway(&system)
        .get_integration_settings(GetIntegrationSettingsRequest {
            tenant_id: DEALER.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.version, 0);
    let shown: Value = serde_json::from_str(&shown.settings_json).unwrap();
    assert_eq!(
        shown["hl7"]["messages"]["ADT^A03"]["event_type"],
        "patient.discharged"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_the_sender_gets_ae_and_its_resend_succeeds() {
    let system = System::start(&[
        ServiceKind::Scheduling,
        ServiceKind::CallLogging,
        ServiceKind::IntegrationGateway,
    ])
    .await;
    publish_core(&system).await;
    publish_gateway(
        &system,
        HOSPITAL,
        json!({"hl7": {"senders": [{"application": "HIS", "facility": "SZRMYY"}]}}),
    )
    .await;
    let mut sender = MllpClient::tls(system.mllp_addr).await;
    let discharge = message(A03, "MSG-DOWN-1", an_hour_ago());

    callback_tests::set_connections(&system.db.name, false).await;
    let ack = sender.exchange(&discharge).await;
    assert_eq!(field(&ack, "MSA", 1), "AE", "{ack}");
    assert_eq!(field(&ack, "MSA", 2), "MSG-DOWN-1");
    callback_tests::set_connections(&system.db.name, true).await;

    // The sender resends until it is accepted, as integration engines do.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ack = loop {
        let ack = sender.exchange(&discharge).await;
        if field(&ack, "MSA", 1) == "AA" {
            break ack;
        }
        assert_eq!(field(&ack, "MSA", 1), "AE", "{ack}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no AA within 30 s of recovery: {ack}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(field(&ack, "MSA", 2), "MSG-DOWN-1");
    assert_eq!(scheduled(&system, HOSPITAL).await, 1);
    system.stop().await;
}

fn bearer(permission: &str) -> (&'static str, String) {
    (
        "authorization",
        format!("Bearer {}", token("his-fhir", &[permission])),
    )
}

fn fhir_json() -> (&'static str, String) {
    ("content-type", "application/fhir+json".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_encounters_appointments_and_bundles_over_https() {
    let system = System::start(&[
        ServiceKind::Scheduling,
        ServiceKind::CallLogging,
        ServiceKind::IntegrationGateway,
    ])
    .await;
    publish_core(&system).await;
    let base = format!(
        "https://localhost:{}/fhir/{HOSPITAL}",
        system.http_addr.port()
    );
    let end = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let encounter = json!({
        "resourceType": "Encounter", "identifier": [{"system": "urn:his:visit", "value": "V-100"}],
        "status": "finished", "class": {"code": "IMP"}, "subject": {"reference": "#p"},
        "contained": [{"resourceType": "Patient", "id": "p", "identifier": [{"value": "P-100"}],
                       "name": [{"text": "李娜"}], "telecom": [{"system": "phone", "value": "13800138000"}]}],
        "serviceType": {"coding": [{"code": "CARD"}]},
        "period": {"start": "2026-11-20T09:00:00+08:00", "end": end}
    });

    let metadata = http("GET", &format!("{base}/metadata"), &[], Vec::new()).await;
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.json()["resourceType"], "CapabilityStatement");
    assert_eq!(metadata.json()["fhirVersion"], "4.0.1");

    let unauthenticated = http(
        "POST",
        &format!("{base}/Encounter"),
        &[fhir_json()],
        encounter.to_string(),
    )
    .await;
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(unauthenticated.json()["resourceType"], "OperationOutcome");
    let other_tenant = http(
        "POST",
        &format!("{base}/Encounter"),
        &[fhir_json(), bearer("elsewhere:integration")],
        encounter.to_string(),
    )
    .await;
    assert_eq!(other_tenant.status, 403);
    let agent = http(
        "POST",
        &format!("{base}/Encounter"),
        &[fhir_json(), bearer(&format!("{HOSPITAL}:agent"))],
        encounter.to_string(),
    )
    .await;
    assert_eq!(agent.status, 403);
    let not_json = http(
        "POST",
        &format!("{base}/Encounter"),
        &[fhir_json(), bearer(&format!("{HOSPITAL}:integration"))],
        "{oops",
    )
    .await;
    assert_eq!(not_json.status, 400);
    let mut no_end = encounter.clone();
    no_end["period"] = json!({"start": "2026-11-20"});
    let invalid = http(
        "POST",
        &format!("{base}/Encounter"),
        &[fhir_json(), bearer(&format!("{HOSPITAL}:integration"))],
        no_end.to_string(),
    )
    .await;
    assert_eq!(invalid.status, 422);
    assert_eq!(
        invalid.json()["issue"][0]["expression"][0],
        "Encounter.period.end"
    );
    assert_eq!(scheduled(&system, HOSPITAL).await, 0);

    let created = http(
        "POST",
        &format!("{base}/Encounter"),
        &[fhir_json(), bearer(&format!("{HOSPITAL}:integration"))],
        encounter.to_string(),
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(scheduled(&system, HOSPITAL).await, 1);
    // A conditional update of the same finished encounter is a resend.
    let again = http(
        "PUT",
        &format!("{base}/Encounter?identifier=urn:his:visit|V-100"),
        &[fhir_json(), bearer(&format!("{HOSPITAL}:integration"))],
        encounter.to_string(),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(scheduled(&system, HOSPITAL).await, 1);
    let mut scheduling = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
    let claimed = callback_tests::claim(&mut scheduling, HOSPITAL, "nurse-1")
        .await
        .expect("the encounter's callback");
    assert_eq!(claimed.subject.unwrap().subject_id, "P-100");

    // A transaction Bundle: a Patient, its booked appointment, an encounter still in progress
    // (accepted, nothing scheduled).
    let start = (Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:pat-1", "resource": {"resourceType": "Patient", "id": "pat-1", "identifier": [{"value": "P-200"}], "name": [{"family": "王", "given": ["芳"]}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Appointment", "id": "APT-1", "status": "booked", "start": start,
                      "participant": [{"actor": {"reference": "Patient/pat-1"}}]},
         "request": {"method": "POST", "url": "Appointment"}},
        {"resource": {"resourceType": "Encounter", "id": "E-2", "status": "in-progress", "class": {"code": "AMB"},
                      "subject": {"reference": "Patient/pat-1"}},
         "request": {"method": "POST", "url": "Encounter"}}
    ]});
    let answered = http(
        "POST",
        &base,
        &[fhir_json(), bearer(&format!("{HOSPITAL}:integration"))],
        bundle.to_string(),
    )
    .await;
    assert_eq!(
        answered.status,
        200,
        "{}",
        String::from_utf8_lossy(&answered.body)
    );
    let response = answered.json();
    assert_eq!(response["type"], "transaction-response");
    assert_eq!(response["entry"][1]["response"]["status"], "201 Created");
    assert_eq!(response["entry"][2]["response"]["status"], "200 OK");
    assert_eq!(scheduled(&system, HOSPITAL).await, 2);
    // A bundle with one invalid entry writes nothing.
    let mut broken = bundle.clone();
    broken["entry"][1]["resource"]["id"] = json!("APT-2");
    broken["entry"][2]["resource"]["status"] = json!("finished");
    let refused = http(
        "POST",
        &base,
        &[fhir_json(), bearer(&format!("{HOSPITAL}:integration"))],
        broken.to_string(),
    )
    .await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.json()["issue"][0]["expression"][0],
        "Bundle.entry[2].Encounter.period.end"
    );
    assert_eq!(scheduled(&system, HOSPITAL).await, 2);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_and_telephony_webhooks_are_signed_and_idempotent() {
    let secrets = secrets_file(
        "webhooks",
        json!({DEALER: {"dms-main": "s3cret-dms", "pbx": "s3cret-pbx"}}),
    );
    let system = System::start_with_settings(
        &[
            ServiceKind::Scheduling,
            ServiceKind::CallLogging,
            ServiceKind::IntegrationGateway,
        ],
        &[("CALLBACK_INTEGRATION_SECRETS_FILE", Some(secrets))],
    )
    .await;
    publish_core(&system).await;
    publish_gateway(
        &system,
        DEALER,
        json!({"webhooks": {"senders": [{"name": "dms-main"}, {"name": "pbx"}]}}),
    )
    .await;
    let url = format!(
        "https://localhost:{}/webhooks/{DEALER}",
        system.http_addr.port()
    );
    let sale = json!({
        "schema": "callback.dms.v1", "event": "vehicle.sold", "event_id": "SO-2026-0042",
        "occurred_at": (Utc::now() - chrono::Duration::hours(3)).to_rfc3339(),
        "customer": {"id": "CUS-9", "name": "李雷", "phones": ["13700000009"]},
        "sales_advisor": {"id": "advisor-1"}, "vehicle": {"model": "Model Y"}
    })
    .to_string();
    let signed = |sender: &str, secret: &[u8], at: i64, body: &str| {
        vec![
            ("content-type", "application/json".to_owned()),
            ("x-callback-sender", sender.to_owned()),
            ("x-callback-timestamp", at.to_string()),
            ("x-callback-signature", sign(secret, at, body.as_bytes())),
        ]
    };
    let now = Utc::now().timestamp();

    let forged = http(
        "POST",
        &format!("{url}/dms"),
        &signed("dms-main", b"guess", now, &sale),
        sale.clone(),
    )
    .await;
    assert_eq!(forged.status, 401);
    let stale = http(
        "POST",
        &format!("{url}/dms"),
        &signed("dms-main", b"s3cret-dms", now - 600, &sale),
        sale.clone(),
    )
    .await;
    assert_eq!(stale.status, 401);
    assert!(stale.json()["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("replay window"));
    let stranger = http(
        "POST",
        &format!("{url}/dms"),
        &signed("someone", b"s3cret-dms", now, &sale),
        sale.clone(),
    )
    .await;
    assert_eq!(stranger.status, 401);
    let unsigned = http(
        "POST",
        &format!("{url}/dms"),
        &[("content-type", "application/json".into())],
        sale.clone(),
    )
    .await;
    assert_eq!(unsigned.status, 401);
    // Signed, but the body changed on the way.
    let tampered = sale.replace("CUS-9", "CUS-8");
    let changed = http(
        "POST",
        &format!("{url}/dms"),
        &signed("dms-main", b"s3cret-dms", now, &sale),
        tampered,
    )
    .await;
    assert_eq!(changed.status, 401);
    assert_eq!(scheduled(&system, DEALER).await, 0);

    let accepted = http(
        "POST",
        &format!("{url}/dms"),
        &signed("dms-main", b"s3cret-dms", now, &sale),
        sale.clone(),
    )
    .await;
    assert_eq!(
        accepted.status,
        201,
        "{}",
        String::from_utf8_lossy(&accepted.body)
    );
    assert_eq!(accepted.json()["callbacks_scheduled"], 1);
    let resent = http(
        "POST",
        &format!("{url}/dms"),
        &signed("dms-main", b"s3cret-dms", now + 5, &sale),
        sale.clone(),
    )
    .await;
    assert_eq!(resent.status, 200);
    assert_eq!(resent.json()["duplicate"], true);
    assert_eq!(scheduled(&system, DEALER).await, 1);
    // A mapping fault names the field.
    let no_customer = sale.replace("\"id\":\"CUS-9\",", "");
    let refused = http(
        "POST",
        &format!("{url}/dms"),
        &signed("dms-main", b"s3cret-dms", now, &no_customer),
        no_customer.clone(),
    )
    .await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.json()["error"]["field"],
        "subject_id (/customer/id)"
    );
    let v2 = sale.replace("callback.dms.v1", "callback.dms.v2");
    let refused = http(
        "POST",
        &format!("{url}/dms"),
        &signed("dms-main", b"s3cret-dms", now, &v2),
        v2.clone(),
    )
    .await;
    assert_eq!(
        (refused.status, refused.json()["error"]["field"].clone()),
        (422, json!("schema"))
    );

    // A call detail record from Asterisk, by the PBX's signature; then by a middleware token.
    let cdr = json!({"uniqueid": "1764489600.42", "src": "8001", "dst": "13700000009",
        "start": "2026-11-30 16:00:00", "answer": "2026-11-30 16:00:09", "end": "2026-11-30 16:03:09",
        "billsec": 180, "disposition": "ANSWERED"})
    .to_string();
    let recorded = http(
        "POST",
        &format!("{url}/telephony"),
        &signed("pbx", b"s3cret-pbx", now, &cdr),
        cdr.clone(),
    )
    .await;
    assert_eq!(
        recorded.status,
        201,
        "{}",
        String::from_utf8_lossy(&recorded.body)
    );
    let again = http(
        "POST",
        &format!("{url}/telephony"),
        &[(
            "authorization",
            format!(
                "Bearer {}",
                token("cti", &[&format!("{DEALER}:middleware")])
            ),
        )],
        cdr.clone(),
    )
    .await;
    assert_eq!(
        (again.status, again.json()["duplicate"].clone()),
        (200, json!(true))
    );
    let records: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'TelephonyRecordIngested'",
    )
    .fetch_one(&system.db.pool)
    .await
    .unwrap();
    assert_eq!(records, 1);
    system.stop().await;
}

/// A webhook receiver: answers 500 to the first `failures` requests, then 200; keeps every
/// request's idempotency key, signature check and body.
#[derive(Clone, Default)]
struct Receiver {
    failures: Arc<Mutex<usize>>,
    requests: Arc<Mutex<Vec<Received>>>,
}

/// A request as received: its idempotency key, whether its signature held, its body, the
/// status answered.
type Received = (String, bool, Value, u16);

async fn receive(
    axum::extract::State(receiver): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let verified = callback_integration_gateway::webhooks::verify(
        b"hook-secret",
        header("x-callback-timestamp").as_deref(),
        header("x-callback-signature").as_deref(),
        &body,
        Utc::now(),
        300,
    )
    .is_ok();
    let status = {
        let mut failures = receiver.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            500
        } else {
            200
        }
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    receiver.requests.lock().unwrap().push((
        header("idempotency-key").unwrap_or_default(),
        verified,
        body,
        status,
    ));
    axum::http::StatusCode::from_u16(status).unwrap()
}

async fn start_receiver(failures: usize) -> (Receiver, std::net::SocketAddr) {
    let receiver = Receiver {
        failures: Arc::new(Mutex::new(failures)),
        ..Receiver::default()
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_reach_a_webhook_once_with_retries_and_failures_become_dead_letters() {
    let secrets = secrets_file("notify", json!({HOSPITAL: {"hook": "hook-secret"}}));
    let (mail, relay) = SmtpReceiver::start().await;
    let mut system = System::start_with_settings(
        &ServiceKind::ALL,
        &[
            ("CALLBACK_INTEGRATION_SECRETS_FILE", Some(secrets)),
            ("CALLBACK_SMTP_URL", Some(format!("smtp://{relay}"))),
            (
                "CALLBACK_SMTP_FROM",
                Some("callback@hospital.example".into()),
            ),
        ],
    )
    .await;
    let (receiver, addr) = start_receiver(2).await;
    // Nothing listens here: every delivery fails.
    let dead_port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    publish_gateway(
        &system,
        HOSPITAL,
        json!({"subscriptions": [
            {"name": "quality-office", "kind": "webhook", "url": format!("http://{addr}/hook"), "secret": "hook",
             "topics": ["complaint.escalated"]},
            {"name": "broken-robot", "kind": "wecom", "url": format!("http://127.0.0.1:{dead_port}/cgi-bin/webhook/send?key=k"),
             "topics": ["complaint.escalated"], "max_attempts": 2},
            {"name": "quality-mail", "kind": "email", "to": ["quality@hospital.example"], "topics": ["complaint.escalated"]}
        ]}),
    )
    .await;
    let mut complaints = ComplaintRoutingClient::new(system.channel(ServiceKind::ComplaintRouting));
    complaints
        .publish_routing_rules(PublishRoutingRulesRequest {
            tenant_id: HOSPITAL.into(),
            rules_json: callback_testkit::fixtures::nursing_routing_rules(),
        })
        .await
        .unwrap();
    // A class A complaint is escalated to the manager at once.
    let filed = complaints
        .file_complaint(FileComplaintRequest {
            tenant_id: HOSPITAL.into(),
            source: "hotline".into(),
            source_id: "H-1".into(),
            channel: "hotline".into(),
            customer: Some(ComplaintCustomer {
                customer_id: "P-1".into(),
                name: "赵六".into(),
                phones: vec!["13900000001".into()],
            }),
            text: "the wrong medicine was given".into(),
            category: "safety".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let complaint_id = filed.complaint.unwrap().complaint_id;

    // Two 500s, then delivered: three requests with one idempotency key, signed.
    let requests = eventually(Duration::from_secs(30), "the escalation delivered", || {
        let receiver = receiver.clone();
        async move {
            let requests = receiver.requests.lock().unwrap().clone();
            requests.iter().any(|r| r.3 == 200).then_some(requests)
        }
    })
    .await;
    assert_eq!(requests.len(), 3);
    assert!(
        requests.iter().all(|r| r.0 == requests[0].0 && r.1),
        "one key, every request signed"
    );
    let body = &requests[2].2;
    assert_eq!(body["topic"], "complaint.escalated");
    assert_eq!(body["complaint_id"], complaint_id.as_str());
    assert_eq!(body["level"], "manager");
    assert!(
        !body.to_string().contains("赵六") && !body.to_string().contains("1390000"),
        "no personal data: {body}"
    );

    // The e-mail reached the relay: the delivery id as Message-ID, the topic in the subject.
    let message = eventually(Duration::from_secs(30), "the escalation mailed", || {
        let mail = mail.clone();
        async move { mail.messages.lock().unwrap().first().cloned() }
    })
    .await;
    assert!(
        message.contains("To: <quality@hospital.example>"),
        "{message}"
    );
    assert!(
        message.contains("Message-ID: <") && message.contains("@callback>"),
        "{message}"
    );
    assert!(message.contains("Subject: =?UTF-8?B?"), "{message}");
    assert!(!message.contains("赵六"), "no personal data");

    // The robot nobody answers is a dead letter after its two attempts.
    let mut client = gateway(&system);
    let dead = eventually(Duration::from_secs(30), "a dead letter", || {
        let mut client = client.clone();
        async move {
            let letters = client
                .list_dead_letters(ListDeadLettersRequest {
                    tenant_id: HOSPITAL.into(),
                    limit: 0,
                })
                .await
                .unwrap()
                .into_inner()
                .dead_letters;
            letters.into_iter().next()
        }
    })
    .await;
    assert_eq!(
        (dead.subscription.as_str(), dead.attempts),
        ("broken-robot", 2)
    );
    assert!(
        dead.last_error.starts_with("connect"),
        "{}",
        dead.last_error
    );
    // Another tenant's admin sees nothing of it.
    let foreign = client
        .list_dead_letters(ListDeadLettersRequest {
            tenant_id: DEALER.into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(foreign.dead_letters.is_empty());

    // A restart of the gateway sends nothing again.
    system.stop_service(ServiceKind::IntegrationGateway).await;
    system.start_service(ServiceKind::IntegrationGateway).await;
    system.wait_serving(ServiceKind::IntegrationGateway).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        3,
        "exactly one delivery across the restart"
    );

    // Requeued by an admin, the dead letter is tried again (and dies again).
    client
        .retry_dead_letter(RetryDeadLetterRequest {
            tenant_id: HOSPITAL.into(),
            delivery_id: dead.delivery_id.clone(),
        })
        .await
        .unwrap();
    let not_dead = client
        .retry_dead_letter(RetryDeadLetterRequest {
            tenant_id: HOSPITAL.into(),
            delivery_id: dead.delivery_id.clone(),
        })
        .await;
    // Either still pending (FAILED_PRECONDITION) or already dead again (OK): never two queued.
    if let Err(status) = not_dead {
        assert_eq!(status.code(), Code::FailedPrecondition);
    }
    let unknown = client
        .retry_dead_letter(RetryDeadLetterRequest {
            tenant_id: HOSPITAL.into(),
            delivery_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    eventually(
        Duration::from_secs(30),
        "the requeued letter dead again",
        || {
            let mut client = client.clone();
            async move {
                let letters = client
                    .list_dead_letters(ListDeadLettersRequest {
                        tenant_id: HOSPITAL.into(),
                        limit: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .dead_letters;
                (letters.len() == 1 && letters[0].attempts == 2).then_some(())
            }
        },
    )
    .await;

    // The read models rebuilt from the log equal the live ones.
    let snapshot = |pool: sqlx::PgPool| async move {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT concat_ws('|', delivery_id, tenant_id, subscription, topic, event_id, message::text, status) \
             FROM ig_deliveries ORDER BY delivery_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let settings: Vec<(String,)> = sqlx::query_as(
            "SELECT concat_ws('|', tenant_id, version, settings::text, published_at) FROM ig_settings \
             UNION ALL SELECT concat_ws('|', tenant_id, name, active_since) FROM ig_subscriptions ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        (rows, settings)
    };
    system.stop_service(ServiceKind::IntegrationGateway).await;
    let live = snapshot(system.db.pool.clone()).await;
    assert_eq!(live.0.len(), 3);
    assert_eq!(mail.messages.lock().unwrap().len(), 1, "one e-mail");
    let store = callback_eventstore::EventStore::open(system.db.pool.clone())
        .await
        .unwrap();
    callback_integration_gateway::reset_read_models(&store)
        .await
        .unwrap();
    system.start_service(ServiceKind::IntegrationGateway).await;
    system.wait_serving(ServiceKind::IntegrationGateway).await;
    let pool = system.db.pool.clone();
    let rebuilt = eventually(Duration::from_secs(30), "the deliveries rebuilt", || {
        let pool = pool.clone();
        let expected = live.clone();
        async move {
            let rebuilt = snapshot(pool).await;
            (rebuilt == expected).then_some(rebuilt)
        }
    })
    .await;
    assert_eq!(rebuilt, live);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        3,
        "a rebuild notifies nothing again"
    );
    system.stop().await;
}
