//! Integration gateway benchmark: HL7 ADT^A03 discharges end to end (a framed message in, its
//! ACK out after scheduling committed the fact and its callback) over 8 concurrent MLLP
//! connections, as messages/s and ACK latency, beside the gRPC ingest rate of the same facts
//! with the same concurrency in the same run.
//!
//! Run: `cargo run --release -p callback-bench --bin integration_bench`
//! (`BENCH_SECONDS` per phase, default 10; `BENCH_CONNECTIONS`, default 8.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use callback_bench::{env_or, environment, percentile, write_section, BenchDb, InProcess};
use callback_kit::ServiceKind;
use callback_proto::v1::integration_gateway_client::IntegrationGatewayClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    IngestBusinessEventRequest, PublishIntegrationSettingsRequest, PublishPolicyRequest, Subject,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

const TENANT: &str = "bench";

fn settings() -> String {
    json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["ward"], "agents": [{"agent_id": "nurse-1", "pools": ["ward"]}]
    })
    .to_string()
}

fn policy() -> String {
    json!({
        "policy_id": "discharge", "name": "出院回访", "trigger": {"event_type": "patient.discharged"},
        "steps": [{"name": "first", "owner": {"kind": "pool", "pool": "ward"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
    })
    .to_string()
}

/// An ADT^A03 like the sample of a Chinese HIS (v2.4, two phones, attending doctor), its
/// patient and control id unique, discharged an hour ago.
fn discharge(id: &str, at: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|SZRMYY|CALLBACK|SZRMYY|{at}||ADT^A03^ADT_A03|{id}|P|2.4|||AL|NE||UNICODE UTF-8\r\
         EVN|A03|{at}|||D0417^王建国\r\
         PID|1||P{id}^^^SZRMYY^MR||张^伟||19560312|M|||深圳市福田区||13912345678^PRN^PH~0755-83361234^WPN^PH\r\
         PV1|1|I|CARD^3012^2^SZRMYY||||D0417^王建国|||CARD||||1|||D0417^王建国|||||||||||||||||||||||||||20261120091000|{at}\r\
         DG1|1||I21.9^急性心肌梗死^ICD10||20261120|F"
    )
}

fn ingest_request(id: &str) -> IngestBusinessEventRequest {
    IngestBusinessEventRequest {
        tenant_id: TENANT.into(),
        source: "his".into(),
        source_event_id: id.to_owned(),
        event_type: "patient.discharged".into(),
        occurred_at: Some(prost_types::Timestamp::from(
            std::time::SystemTime::now() - Duration::from_secs(3600),
        )),
        subject: Some(Subject {
            subject_id: format!("P{id}"),
            name: "张伟".into(),
            phones: vec!["13912345678".into(), "0755-83361234".into()],
            owner_agent_id: "D0417".into(),
            department: "CARD".into(),
        }),
        attributes_json:
            r#"{"visit_type": "inpatient", "ward": "CARD", "diagnosis_code": "I21.9"}"#.into(),
    }
}

/// Reads one MLLP frame (an ACK) from `stream` into text.
async fn read_ack(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> anyhow::Result<String> {
    loop {
        if let Some(end) = buffer.windows(2).position(|w| w == [0x1c, 0x0d]) {
            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
            let start = frame.iter().position(|b| *b == 0x0b).unwrap_or(0);
            return Ok(String::from_utf8_lossy(&frame[start + 1..frame.len() - 2]).into_owned());
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the gateway closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let connections: usize = env_or("BENCH_CONNECTIONS", 8);
    let duration = Duration::from_secs(seconds);
    let db = BenchDb::create("callback_bench_integration", 4).await?;
    let env = environment(&db.pool).await?;
    println!("{env}");
    let mllp_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let services = InProcess::start_with(
        &db.url,
        &[
            ServiceKind::Scheduling,
            ServiceKind::CallLogging,
            ServiceKind::IntegrationGateway,
        ],
        24,
        false,
        &[
            ("CALLBACK_MLLP_ADDR", format!("127.0.0.1:{mllp_port}")),
            (
                "CALLBACK_INTEGRATION_HTTP_ADDR",
                format!("127.0.0.1:{http_port}"),
            ),
        ],
    )
    .await?;
    services.publish_tenant(TENANT, settings()).await?;
    let mut scheduling = SchedulingClient::new(services.channel(ServiceKind::Scheduling)?);
    scheduling
        .publish_policy(PublishPolicyRequest {
            tenant_id: TENANT.into(),
            policy_json: policy(),
        })
        .await?;
    let mut gateway =
        IntegrationGatewayClient::new(services.channel(ServiceKind::IntegrationGateway)?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = PublishIntegrationSettingsRequest {
            tenant_id: TENANT.into(),
            settings_json:
                json!({"hl7": {"senders": [{"application": "HIS", "facility": "SZRMYY"}]}})
                    .to_string(),
        };
        match gateway.publish_integration_settings(request).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    // gRPC ingest of the same facts, the same concurrency.
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let mut client = SchedulingClient::new(services.channel(ServiceKind::Scheduling)?);
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut n = 0u64;
            while Instant::now() < stop_at {
                let t = Instant::now();
                let response = client
                    .ingest_business_event(ingest_request(&format!("g{worker}-{n}")))
                    .await?
                    .into_inner();
                mine.push(t.elapsed());
                anyhow::ensure!(
                    response.scheduled.len() == 1,
                    "an ingest schedules one callback"
                );
                n += 1;
            }
            latencies.lock().await.extend(mine);
            anyhow::Ok(n)
        }));
    }
    let mut ingested = 0;
    for task in tasks {
        ingested += task.await??;
    }
    let grpc_rate = ingested as f64 / started.elapsed().as_secs_f64();
    let mut grpc_latencies = std::mem::take(&mut *latencies.lock().await);
    grpc_latencies.sort();
    println!(
        "gRPC ingest, {connections} clients: {grpc_rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&grpc_latencies, 0.5)),
        ms(percentile(&grpc_latencies, 0.99))
    );

    // HL7 over MLLP: each connection sends, waits for the ACK, sends the next.
    let shanghai =
        chrono::FixedOffset::east_opt(8 * 3600).ok_or_else(|| anyhow::anyhow!("UTC+8"))?;
    let at = (chrono::Utc::now() - chrono::Duration::hours(1))
        .with_timezone(&shanghai)
        .format("%Y%m%d%H%M%S")
        .to_string();
    let stop_at = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let latencies = latencies.clone();
        let at = at.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", mllp_port)).await?;
            stream.set_nodelay(true)?;
            let mut buffer = Vec::new();
            let mut mine = Vec::new();
            let mut n = 0u64;
            while Instant::now() < stop_at {
                let id = format!("M{connection}-{n}");
                let mut framed = vec![0x0b];
                framed.extend_from_slice(discharge(&id, &at).as_bytes());
                framed.extend_from_slice(&[0x1c, 0x0d]);
                let t = Instant::now();
                stream.write_all(&framed).await?;
                let ack = read_ack(&mut stream, &mut buffer).await?;
                mine.push(t.elapsed());
                anyhow::ensure!(ack.contains(&format!("MSA|AA|{id}")), "not accepted: {ack}");
                n += 1;
            }
            latencies.lock().await.extend(mine);
            anyhow::Ok(n)
        }));
    }
    let mut messages = 0;
    for task in tasks {
        messages += task.await??;
    }
    let hl7_rate = messages as f64 / started.elapsed().as_secs_f64();
    let mut hl7_latencies = std::mem::take(&mut *latencies.lock().await);
    hl7_latencies.sort();
    let scheduled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'CallbackScheduled'")
            .fetch_one(&db.pool)
            .await?;
    anyhow::ensure!(
        scheduled == (ingested + messages) as i64,
        "every fact scheduled exactly one callback ({scheduled} for {} facts)",
        ingested + messages
    );
    println!(
        "HL7 ADT^A03 over MLLP, {connections} connections: {hl7_rate:.0}/s ({:.0}% of gRPC), ACK p50 {:.1} ms, p99 {:.1} ms",
        100.0 * hl7_rate / grpc_rate,
        ms(percentile(&hl7_latencies, 0.5)),
        ms(percentile(&hl7_latencies, 0.99))
    );
    services.stop().await;

    let body = format!(
        "## Integration gateway (`integration_bench`)\n\n\
         Command: `cargo run --release -p callback-bench --bin integration_bench` (BENCH_SECONDS={seconds}, \
         BENCH_CONNECTIONS={connections}). Scheduling, call logging and the integration gateway run in the same \
         process as real servers (24 database connections each), in plaintext without authentication; the gateway \
         hands each fact to scheduling over loopback gRPC. Each MLLP connection sends a discharge like \
         `services/integration-gateway/samples/hl7/adt-a03-discharge.hl7` (a new patient and control id each), waits for its ACK \
         (written after scheduling committed the fact and its callback), and sends the next.\n\n{env}\n\
         | measure | result | target |\n|---|---|---|\n\
         | gRPC `IngestBusinessEvent`, {connections} concurrent clients, the same facts | {grpc_rate:.0}/s (p50 {:.1} ms, p99 {:.1} ms) | (reference) |\n\
         | HL7 ADT^A03 over MLLP, {connections} connections, framed message in to ACK out | {hl7_rate:.0}/s = {:.0}% of gRPC (ACK p50 {:.1} ms, p99 {:.1} ms) | >= 50% of gRPC, p99 < 50 ms |\n\n\
         Every message was acknowledged AA and the log holds exactly one `CallbackScheduled` per fact \
         ({scheduled} for {} facts), checked at the end of the run.\n",
        ms(percentile(&grpc_latencies, 0.5)),
        ms(percentile(&grpc_latencies, 0.99)),
        100.0 * hl7_rate / grpc_rate,
        ms(percentile(&hl7_latencies, 0.5)),
        ms(percentile(&hl7_latencies, 0.99)),
        ingested + messages,
    );
    let path = write_section("integration-bench", &body)?;
    println!("wrote {}", path.display());
    Ok(())
}
