//! Hostile input on every RPC of every service, as a foreign client sends it: requests built
//! from the published proto descriptors (so a new RPC or field is covered without touching
//! this test), filled with arbitrary strings (empty, NUL, huge, not UTF-8 in spirit, JSON
//! traps), extreme numbers and times, and long repeated fields. For every answer: never
//! INTERNAL or UNKNOWN, a short message that names a field when it refuses input, and nothing
//! written to the log when refused.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use callback_kit::ServiceKind;
use callback_proto::prost::Message;
use callback_proto::prost_types::field_descriptor_proto::{Label, Type};
use callback_proto::prost_types::{DescriptorProto, FileDescriptorSet};
use callback_tests::raw::{put_varint as varint, RawCodec};
use callback_tests::System;
use tonic::Code;

/// Requests per RPC. Each run uses a fresh seed (printed), so runs explore different inputs;
/// `HOSTILE_SEED` replays one.
const REQUESTS_PER_RPC: usize = 40;

/// Longest status message accepted: it travels in HTTP/2 headers.
const MAX_MESSAGE: usize = 400;

// ---- a small deterministic random source ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---- protobuf encoding of generated values ----

fn key(out: &mut Vec<u8>, number: i32, wire_type: u64) {
    varint(out, ((number as u64) << 3) | wire_type);
}

fn length_delimited(out: &mut Vec<u8>, number: i32, bytes: &[u8]) {
    key(out, number, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Every message type of the descriptors, by its full name (`.callback.v1.Subject`).
struct Schema {
    messages: HashMap<String, DescriptorProto>,
}

impl Schema {
    fn new(set: &FileDescriptorSet) -> Schema {
        let mut messages = HashMap::new();
        fn add(messages: &mut HashMap<String, DescriptorProto>, scope: &str, m: &DescriptorProto) {
            let name = format!("{scope}.{}", m.name());
            for nested in &m.nested_type {
                add(messages, &name, nested);
            }
            messages.insert(name, m.clone());
        }
        for file in &set.file {
            let scope = if file.package().is_empty() {
                String::new()
            } else {
                format!(".{}", file.package())
            };
            for m in &file.message_type {
                add(&mut messages, &scope, m);
            }
        }
        Schema { messages }
    }
}

/// Strings a careless or hostile client sends, weighted towards ones that reach deep code.
fn hostile_string(rng: &mut Rng, field: &str) -> String {
    let plausible_id = ["t1", "hospital", "cc-1", "his", "call-center", "ward-a"];
    // Half the time a field gets a value that passes its own check, so requests get past the
    // first check and reach deeper code (and sometimes succeed, building state to hit).
    if let Some(value) = plausible(field) {
        if rng.chance(50) {
            return value.to_owned();
        }
    }
    if (field.contains("tenant") || field.ends_with("_id") || field == "source") && rng.chance(50) {
        return rng.pick(&plausible_id).to_string();
    }
    match rng.below(16) {
        0 => String::new(),
        1 => "\0".into(),
        2 => "a\0b".into(),
        3 => "x".repeat(70_000),
        4 if rng.chance(20) => "界".repeat(400_000),
        5 => "'; DROP TABLE events; --".into(),
        6 => "{".into(),
        7 => "[]".into(),
        8 => r#"{"steps":[{"name":"s","owner":{"kind":"pool","pool":"p"},"timing":{"kind":"window","anchor":"trigger","earliest":{},"latest":{"hours":4294967295}}}],"policy_id":"p","name":"n","trigger":{"event_type":"e"}}"#.into(),
        9 => r#"{"calendar":{"time_zone":"Asia/Shanghai","windows":[{"start":"08:00","end":"17:00"}]},"frequency_caps":{"per_day":0}}"#.into(),
        10 => "99999999999999999999999".into(),
        11 => "\u{202e}\u{fffd}\u{1f600}".into(),
        12 => "9999-12-31T23:59:59Z".into(),
        13 => "../../etc/passwd".into(),
        14 => "   ".into(),
        _ => rng.pick(&plausible_id).to_string(),
    }
}

/// A value that passes the named field's own check.
fn plausible(field: &str) -> Option<&'static str> {
    Some(match field {
        "tenant_id" => "t1",
        "agent_id" | "actor" | "reader" | "reviewer" => "cc-1",
        "source" => "dms",
        "event_type" => "repair_order.closed",
        "subject_id" | "customer_id" => "customer-1",
        "phones" | "number_dialed" => "13900139000",
        "pool" => "call-center",
        "department" | "to_department" => "service",
        "channel" => "phone",
        "disposition" => "reached",
        "attributes_json" | "metadata_json" | "answers_json" => "{}",
        "report" => "callbacks",
        "granularity" => "month",
        "month" => "2026-11",
        "category" => "billing",
        "view" => "overdue",
        "settings_json" => {
            r#"{"calendar":{"time_zone":"Asia/Shanghai","windows":[{"start":"00:00","end":"24:00"}],"working_weekdays":["Mon","Tue","Wed","Thu","Fri","Sat","Sun"]},"pools":["call-center"],"departments":["service"],"agents":[{"agent_id":"cc-1","pools":["call-center"]}]}"#
        }
        "policy_json" => {
            r#"{"policy_id":"p1","name":"回访","trigger":{"event_type":"repair_order.closed"},"steps":[{"name":"s","owner":{"kind":"pool","pool":"call-center"},"timing":{"kind":"window","anchor":"trigger","earliest":{},"latest":{"days":7}}}]}"#
        }
        _ => return None,
    })
}

fn timestamp(rng: &mut Rng) -> Vec<u8> {
    let now = chrono::Utc::now().timestamp();
    let seconds = *rng.pick(&[
        0,
        now,
        now,
        now - 60,
        now - 86_400,
        -62_135_596_800,    // year 1
        253_402_300_799,    // 9999-12-31
        8_210_266_876_799,  // past chrono's range in some time zones
        -3_155_760_000_000, // year -100000
        i64::MAX,
        i64::MIN,
    ]);
    let nanos = *rng.pick(&[0i32, -1, 999_999_999, i32::MAX]);
    let mut out = Vec::new();
    key(&mut out, 1, 0);
    varint(&mut out, seconds as u64);
    key(&mut out, 2, 0);
    varint(&mut out, nanos as i64 as u64);
    out
}

/// A request of type `type_name`; `huge_list` is set to the repeated field given 5,000 entries,
/// if one was.
fn message(
    schema: &Schema,
    rng: &mut Rng,
    type_name: &str,
    depth: usize,
    huge_list: &mut Option<String>,
) -> Vec<u8> {
    if type_name == ".google.protobuf.Timestamp" {
        return timestamp(rng);
    }
    let Some(descriptor) = schema.messages.get(type_name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for field in &descriptor.field {
        if rng.chance(15) {
            continue; // absent
        }
        let repeated = field.label() == Label::Repeated;
        if repeated && rng.chance(5) {
            // A huge list of small items: every repeated field must be bounded.
            *huge_list = Some(field.name().to_owned());
            for n in 0..5_000 {
                match field.r#type() {
                    Type::Message => length_delimited(&mut out, field.number(), &[]),
                    Type::String | Type::Bytes => {
                        length_delimited(&mut out, field.number(), format!("e{n}").as_bytes())
                    }
                    _ => value(schema, rng, field, depth, huge_list, &mut out),
                }
            }
            continue;
        }
        let count = if repeated { rng.below(4) } else { 1 };
        for _ in 0..count {
            value(schema, rng, field, depth, huge_list, &mut out);
        }
    }
    out
}

fn value(
    schema: &Schema,
    rng: &mut Rng,
    field: &callback_proto::prost_types::FieldDescriptorProto,
    depth: usize,
    huge_list: &mut Option<String>,
    out: &mut Vec<u8>,
) {
    let number = field.number();
    match field.r#type() {
        Type::String | Type::Bytes => {
            let text = hostile_string(rng, field.name());
            length_delimited(out, number, text.as_bytes());
        }
        Type::Message => {
            if depth < 4 {
                let inner = message(schema, rng, field.type_name(), depth + 1, huge_list);
                length_delimited(out, number, &inner);
            }
        }
        Type::Bool => {
            key(out, number, 0);
            varint(out, rng.below(2) as u64);
        }
        Type::Double => {
            key(out, number, 1);
            let v = *rng.pick(&[f64::NAN, f64::INFINITY, -1.0, 1e308, 0.5, 0.0]);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Type::Float => {
            key(out, number, 5);
            let v = *rng.pick(&[f32::NAN, f32::INFINITY, -1.0, 0.5]);
            out.extend_from_slice(&v.to_le_bytes());
        }
        _ => {
            // Every varint kind: int32/64, uint32/64, enum.
            key(out, number, 0);
            let v = *rng.pick(&[
                0i64,
                1,
                -1,
                7,
                999,
                i32::MAX as i64,
                i32::MIN as i64,
                u32::MAX as i64,
                i64::MAX,
                i64::MIN,
            ]);
            varint(out, v as u64);
        }
    }
}

// ---- the run ----

fn kind_of(service: &str) -> Option<ServiceKind> {
    match service {
        "Scheduling" => Some(ServiceKind::Scheduling),
        "CallLogging" => Some(ServiceKind::CallLogging),
        "ComplaintRouting" => Some(ServiceKind::ComplaintRouting),
        "Analytics" => Some(ServiceKind::Analytics),
        "IntegrationGateway" => Some(ServiceKind::IntegrationGateway),
        "EventFeed" => Some(ServiceKind::Scheduling),
        _ => None,
    }
}

async fn event_count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A refusal's problems, if any: the code, the length, and a field named for bad input.
fn judge(status: &tonic::Status) -> Option<String> {
    let message = status.message();
    if message.contains("h2 protocol error") {
        // The client could not read the answer: its status message overflowed the headers.
        return Some(format!(
            "an unreadable answer ({:?}: {message})",
            status.code()
        ));
    }
    if matches!(status.code(), Code::Internal | Code::Unknown) {
        return Some(format!("{:?}: {message}", status.code()));
    }
    if message.len() > MAX_MESSAGE {
        return Some(format!(
            "{:?} with a {}-byte message: {}...",
            status.code(),
            message.len(),
            message.chars().take(120).collect::<String>()
        ));
    }
    if status.code() == Code::InvalidArgument && !message.contains(':') {
        return Some(format!("INVALID_ARGUMENT without a field: {message}"));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_on_every_rpc_get_precise_short_answers_and_write_nothing() {
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64 | 1);
    println!("HOSTILE_SEED={seed}");
    let mut rng = Rng(seed);
    let system = System::start(&ServiceKind::ALL).await;
    let set = FileDescriptorSet::decode(callback_proto::FILE_DESCRIPTOR_SET).unwrap();
    let schema = Schema::new(&set);
    let mut problems = Vec::new();
    let mut calls = 0;
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    for file in &set.file {
        for service in &file.service {
            let Some(kind) = kind_of(service.name()) else {
                continue;
            };
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                for _ in 0..REQUESTS_PER_RPC {
                    let mut huge_list = None;
                    let body = message(&schema, &mut rng, method.input_type(), 0, &mut huge_list);
                    let before = event_count(&system.db.pool).await;
                    let mut client = tonic::client::Grpc::new(system.channel(kind))
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20);
                    client.ready().await.unwrap();
                    let route =
                        tonic::codegen::http::uri::PathAndQuery::try_from(path.as_str()).unwrap();
                    let request = tonic::Request::new(body);
                    let answer: Result<(), tonic::Status> = if method.server_streaming() {
                        match client.server_streaming(request, route, RawCodec).await {
                            Ok(response) => {
                                let mut stream = response.into_inner();
                                match tokio::time::timeout(
                                    Duration::from_millis(300),
                                    stream.message(),
                                )
                                .await
                                {
                                    Ok(Err(status)) => Err(status),
                                    _ => Ok(()),
                                }
                            }
                            Err(status) => Err(status),
                        }
                    } else {
                        client.unary(request, route, RawCodec).await.map(|_| ())
                    };
                    calls += 1;
                    let code = answer.as_ref().err().map_or(Code::Ok, |s| s.code());
                    *codes
                        .entry(format!("{}:{code:?}", method.name()))
                        .or_default() += 1;
                    if let (Ok(()), Some(field)) = (&answer, &huge_list) {
                        problems.push(format!("{path}: accepted 5,000 entries of `{field}`"));
                    }
                    if let Err(status) = answer {
                        if let Some(problem) = judge(&status) {
                            problems.push(format!("{path}: {problem}"));
                        }
                        let after = event_count(&system.db.pool).await;
                        if after != before {
                            problems.push(format!(
                                "{path}: refused ({:?}) but {} events were written",
                                status.code(),
                                after - before
                            ));
                        }
                    }
                }
            }
        }
    }
    system.stop().await;
    println!("{calls} calls; answers by RPC and code: {codes:#?}");
    assert!(calls > 29 * REQUESTS_PER_RPC / 2, "{calls} calls");
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "HOSTILE_SEED={seed}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

mod extremes {
    use callback_kit::ServiceKind;
    use callback_proto::prost_types::Timestamp;
    use callback_proto::v1::scheduling_client::SchedulingClient;
    use callback_proto::v1::{
        IngestBusinessEventRequest, ListCallbacksRequest, PublishPolicyRequest,
        PublishTenantRequest, Subject,
    };
    use callback_tests::System;
    use serde_json::json;
    use tonic::Code;

    fn settings() -> String {
        json!({
            "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                         "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
            "pools": ["call-center"]
        })
        .to_string()
    }

    fn policy(timing: serde_json::Value) -> String {
        json!({
            "policy_id": "repair", "name": "维修回访", "trigger": {"event_type": "repair_order.closed"},
            "steps": [{"name": "s", "owner": {"kind": "pool", "pool": "call-center"}, "timing": timing}]
        })
        .to_string()
    }

    fn ingest(tenant: &str, id: &str, seconds: i64) -> IngestBusinessEventRequest {
        IngestBusinessEventRequest {
            tenant_id: tenant.into(),
            source: "dms".into(),
            source_event_id: id.into(),
            event_type: "repair_order.closed".into(),
            occurred_at: Some(Timestamp { seconds, nanos: 0 }),
            subject: Some(Subject {
                subject_id: format!("customer-{id}"),
                name: "李四".into(),
                phones: vec!["13900139000".into()],
                owner_agent_id: String::new(),
                department: String::new(),
            }),
            attributes_json: "{}".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn extreme_values_are_refused_naming_the_field_and_other_tenants_keep_working() {
        let system = System::start(&[ServiceKind::Scheduling]).await;
        let mut client = SchedulingClient::new(system.channel(ServiceKind::Scheduling));
        for tenant in ["victim", "bystander"] {
            client
                .publish_tenant(PublishTenantRequest {
                    tenant_id: tenant.into(),
                    settings_json: settings(),
                })
                .await
                .unwrap();
        }
        let window =
            json!({"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}});
        client
            .publish_policy(PublishPolicyRequest {
                tenant_id: "bystander".into(),
                policy_json: policy(window.clone()),
            })
            .await
            .unwrap();

        // Numbers no date arithmetic survives are refused when published, naming the field.
        for (timing, field) in [
            (
                json!({"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"hours": 4294967295u32}}),
                "steps[0].timing.latest.hours",
            ),
            (
                json!({"kind": "cadence", "anchor": "trigger", "phases": [{"every_days": 1, "until_days": 4294967295u32}]}),
                "steps[0].timing.phases[0].until_days",
            ),
            (
                json!({"kind": "growing", "anchor": "trigger", "intervals_days": [4294967295u32], "max_occurrences": 3}),
                "steps[0].timing.intervals_days[0]",
            ),
        ] {
            let refused = client
                .publish_policy(PublishPolicyRequest {
                    tenant_id: "victim".into(),
                    policy_json: policy(timing),
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
            assert!(refused.message().contains(field), "{refused:?}");
        }
        client
            .publish_policy(PublishPolicyRequest {
                tenant_id: "victim".into(),
                policy_json: policy(window),
            })
            .await
            .unwrap();

        // Implausible times: past chrono's range in a time zone, year 9999, year 1, year -100000.
        for seconds in [
            8_210_266_876_799,
            253_402_300_799,
            -62_135_596_800,
            -3_155_760_000_000,
        ] {
            let refused = client
                .ingest_business_event(ingest("victim", &format!("bad-{seconds}"), seconds))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
            assert!(refused.message().starts_with("occurred_at:"), "{refused:?}");
        }
        // A NUL character is bad input, not an internal error.
        let refused = client
            .list_callbacks(ListCallbacksRequest {
                tenant_id: "victim".into(),
                department: "ward\0a".into(),
                agent_id: String::new(),
                view: String::new(),
                limit: 10,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

        // Every tenant is still served.
        let now = chrono::Utc::now().timestamp();
        for tenant in ["victim", "bystander"] {
            let answer = client
                .ingest_business_event(ingest(tenant, "fine", now))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(answer.scheduled.len(), 1, "{tenant}: {answer:?}");
        }
        system.stop().await;
    }
}
