//! Scheduling benchmark: business events ingested per second through gRPC (32 concurrent
//! clients; each ingest writes its events and projection rows in one transaction, which
//! ingests arriving together share), and
//! `ClaimNext` latency with 1,000,000 open callbacks and 50 concurrent claimers; each beside
//! the raw single-row INSERT rate measured in the same run.
//!
//! Run: `cargo run --release -p callback-bench --bin scheduling_bench`
//! (`BENCH_SECONDS` per phase, default 10; `BENCH_OPEN_CALLBACKS`, default 1,000,000;
//! `BENCH_CLAIMERS`, default 50.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use callback_bench::{
    env_or, environment, percentile, raw_single_insert_rate, write_section, BenchDb, InProcess,
};
use callback_contracts::EventContract;
use callback_kit::ServiceKind;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimNextRequest, IngestBusinessEventRequest, PublishPolicyRequest, Subject,
};
use callback_scheduling::domain::{CallbackEvent, Channel, RetryRule, Scheduled};
use chrono::Utc;
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

const TENANT: &str = "bench";

fn settings(agents: usize) -> String {
    let agents: Vec<_> = (0..agents)
        .map(|i| json!({"agent_id": format!("agent-{i}"), "pools": ["bench"]}))
        .collect();
    json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["bench"], "agents": agents, "max_leases_per_agent": 0
    })
    .to_string()
}

fn policy() -> String {
    json!({
        "policy_id": "bench-policy", "name": "维修回访",
        "trigger": {"event_type": "repair_order.closed"},
        "steps": [{"name": "call", "owner": {"kind": "pool", "pool": "bench"},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
    })
    .to_string()
}

fn ingest_request(id: String) -> IngestBusinessEventRequest {
    IngestBusinessEventRequest {
        tenant_id: TENANT.into(),
        source: "dms".into(),
        source_event_id: id.clone(),
        event_type: "repair_order.closed".into(),
        occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        subject: Some(Subject {
            subject_id: format!("customer-{id}"),
            name: "王五".into(),
            phones: vec!["13800138000".into()],
            owner_agent_id: String::new(),
            department: String::new(),
        }),
        attributes_json: r#"{"vehicle": "SUV", "advisor": "张师傅", "repair": "更换刹车片"}"#
            .into(),
    }
}

/// Bulk-loads open callbacks: one CallbackScheduled event per callback in the log and its
/// projection row, written by SQL for speed (the service's own path is measured above).
async fn preload(
    pool: &sqlx::PgPool,
    target: i64,
    vault: &callback_vault::Vault,
) -> anyhow::Result<i64> {
    let now = Utc::now();
    let template =
        callback_contracts::encode(&CallbackEvent::CallbackScheduled(Box::new(Scheduled {
            callback_id: Uuid::nil(),
            tenant_id: TENANT.into(),
            policy_id: "bench-policy".into(),
            policy_version: 1,
            step_index: 0,
            step: "call".into(),
            occurrence: 1,
            anchor_at: now,
            due_at: now - chrono::Duration::hours(1),
            deadline: now + chrono::Duration::days(7),
            give_up_at: now + chrono::Duration::days(7),
            priority: 5,
            channel: Channel::Phone,
            questionnaire_id: None,
            owner_agent_id: None,
            pool: "bench".into(),
            pool_after: now,
            subject_id: "subject-0".into(),
            department: None,
            retry: RetryRule::default(),
            fact_stream: "business_event-bench:preload:0".into(),
        })))?;
    // Every subject on one number (its keyed hash), as before sealing; the one the preloaded
    // callbacks are about has its contact sealed with its own key, so every claim opens it as
    // in production.
    let phone_key = vault.phone_key(TENANT, "+8613800138000");
    let key = vault.key_for_sealing(TENANT, "subject-0").await?;
    let sealed = key.seal_json(&serde_json::json!({"name": "测试", "phones": ["+8613800138000"]}));
    sqlx::query(
        "INSERT INTO sched_subjects (tenant_id, subject_id, sealed, phone_keys) \
         SELECT $1, 'subject-' || g, CASE WHEN g = 0 THEN $2 END, ARRAY[$3] \
         FROM generate_series(0, 99999) g ON CONFLICT DO NOTHING",
    )
    .bind(TENANT)
    .bind(&sealed)
    .bind(&phone_key)
    .execute(pool)
    .await?;
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sched_callbacks WHERE status = 'scheduled'")
                .fetch_one(pool)
                .await?;
        if open >= target {
            sqlx::query("ANALYZE sched_callbacks").execute(pool).await?;
            sqlx::query("ANALYZE events").execute(pool).await?;
            return Ok(open);
        }
        let chunk = (target - open).min(100_000);
        sqlx::query(
            "WITH ids AS (SELECT gen_random_uuid() AS id, g FROM generate_series(1, $1::bigint) AS g), \
             ev AS (INSERT INTO events (event_id, stream_id, stream_category, stream_version, event_type, schema_version, payload, metadata) \
                    SELECT gen_random_uuid(), $6 || '-' || id, $6, 1, $7, $8, \
                           replace($2, '00000000-0000-0000-0000-000000000000', id::text)::json, '{}'::json FROM ids RETURNING 1) \
             INSERT INTO sched_callbacks (callback_id, tenant_id, policy_id, policy_version, step, occurrence, subject_id, \
                    department, status, due_at, deadline, priority, owner_agent_id, pool, pool_after, claimed_by, lease_until, \
                    attempts, end_reason, stream_version, give_up_at) \
             SELECT id, $3, 'bench-policy', 1, 'call', 1, 'subject-0', NULL, 'scheduled', \
                    $4 - (g % 1000) * interval '1 minute', $5, (g % 10)::smallint, NULL, 'bench', $4, NULL, NULL, 0, NULL, 1, \
                    $5 \
             FROM ids",
        )
        .bind(chunk)
        .bind(&template.payload)
        .bind(TENANT)
        .bind(now)
        .bind(now + chrono::Duration::days(7))
        .bind(CallbackEvent::CATEGORY)
        .bind(template.event_type)
        .bind(template.schema_version)
        .execute(pool)
        .await?;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let open_target: i64 = env_or("BENCH_OPEN_CALLBACKS", 1_000_000);
    let claimers: usize = env_or("BENCH_CLAIMERS", 50);
    let duration = Duration::from_secs(seconds);
    // 33 connections for the raw reference (32 writers) and 56 for the service: within the
    // default max_connections of 100.
    let db = BenchDb::create("callback_bench_scheduling", 33).await?;
    let env = environment(&db.pool).await?;
    println!("{env}");

    // The service, as a real gRPC server with its own pool.
    // BENCH_SECURITY=on: TLS on the listener and a bearer token on every call, checked by
    // the service (the production path); off: plaintext without authentication (baseline).
    let secure = std::env::var("BENCH_SECURITY").as_deref() == Ok("on");
    let services =
        InProcess::start_secured(&db.url, &[ServiceKind::Scheduling], 56, secure).await?;
    let mut client = SchedulingClient::new(services.channel(ServiceKind::Scheduling)?);
    services.publish_tenant(TENANT, settings(50)).await?;
    client
        .publish_policy(PublishPolicyRequest {
            tenant_id: TENANT.into(),
            policy_json: policy(),
        })
        .await?;

    // Ingest: 32 concurrent clients over 4 connections.
    let raw_before_ingest = raw_single_insert_rate(&db.pool, 32, duration).await?;
    let channels: Vec<_> = (0..4)
        .map(|_| services.channel(ServiceKind::Scheduling))
        .collect::<Result<_, _>>()?;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..32usize {
        let mut client = SchedulingClient::new(channels[worker % channels.len()].clone());
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut n = 0u64;
            while Instant::now() < stop_at {
                let t = Instant::now();
                let response = client
                    .ingest_business_event(ingest_request(format!("w{worker}-{n}")))
                    .await?
                    .into_inner();
                mine.push(t.elapsed());
                anyhow::ensure!(
                    response.scheduled.len() == 1,
                    "an ingest must schedule one callback"
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
    let ingest_rate = ingested as f64 / started.elapsed().as_secs_f64();
    let mut ingest_latencies = std::mem::take(&mut *latencies.lock().await);
    ingest_latencies.sort();
    println!("ingest: {ingest_rate:.0}/s (raw single-row INSERT at 32: {raw_before_ingest:.0}/s)");

    // ClaimNext: 1,000,000 open callbacks, 50 concurrent claimers.
    let vault =
        callback_vault::Vault::open(db.pool.clone(), services.config.master_keys.clone()).await?;
    let open = preload(&db.pool, open_target, &vault).await?;
    let raw_before_claims = raw_single_insert_rate(&db.pool, 32, duration).await?;
    let stop_at = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for agent in 0..claimers {
        let mut client = SchedulingClient::new(channels[agent % channels.len()].clone());
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < stop_at {
                let t = Instant::now();
                let claimed = client
                    .claim_next(ClaimNextRequest {
                        tenant_id: TENANT.into(),
                        agent_id: format!("agent-{agent}"),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                mine.push(t.elapsed());
                anyhow::ensure!(claimed.claimed.is_some(), "the queue must not run dry");
            }
            latencies.lock().await.extend(mine.iter().copied());
            anyhow::Ok(mine.len() as u64)
        }));
    }
    let mut claims = 0;
    for task in tasks {
        claims += task.await??;
    }
    let claim_rate = claims as f64 / started.elapsed().as_secs_f64();
    let mut claim_latencies = std::mem::take(&mut *latencies.lock().await);
    claim_latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "claims: {claims} at {claim_rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms (raw INSERT {raw_before_claims:.0}/s)",
        ms(percentile(&claim_latencies, 0.5)),
        ms(percentile(&claim_latencies, 0.99))
    );
    services.stop().await;

    let (title, command, transport, section) = if secure {
        (
            ", TLS and tokens",
            "BENCH_SECURITY=on ",
            "over TLS, every call with a bearer token (EdDSA) the service verifies",
            "scheduling-bench-secure",
        )
    } else {
        (
            "",
            "",
            "in plaintext without authentication (the baseline)",
            "scheduling-bench",
        )
    };
    let body = format!(
        "## Scheduling (`scheduling_bench`{title})\n\n\
         Command: `{command}cargo run --release -p callback-bench --bin scheduling_bench` (BENCH_SECONDS={seconds}, \
         BENCH_OPEN_CALLBACKS={open_target}). The scheduling service runs in the same process as a real gRPC server \
         (56 database connections); clients call it over loopback gRPC {transport}.\n\n{env}\n\
         | measure | result | raw single-row INSERT, 32 connections, same run | target |\n|---|---|---|---|\n\
         | ingest through gRPC, 32 concurrent clients (business events/s; each writes the fact's event, one \
         callback's event and three projection rows in one transaction) | {ingest_rate:.0}/s (p50 {:.1} ms, p99 {:.1} ms) | \
         {raw_before_ingest:.0} rows/s | >= 2,000/s |\n\
         | ClaimNext with {open} open callbacks, {claimers} concurrent claimers | p50 {:.1} ms, p99 {:.1} ms ({claim_rate:.0} claims/s) | \
         {raw_before_claims:.0} rows/s | p99 < 20 ms |\n\n\
         The open callbacks are bulk-loaded by SQL (a CallbackScheduled event in the log and its projection row \
         each), all due, spread over 10 priorities; every claim appends a CallbackClaimed event and updates the \
         row in one transaction. Requests that arrive together share a transaction (group commit, \
         `callback_kit::batch`); each one's writes still commit or fail as a whole.\n",
        ms(percentile(&ingest_latencies, 0.5)),
        ms(percentile(&ingest_latencies, 0.99)),
        ms(percentile(&claim_latencies, 0.5)),
        ms(percentile(&claim_latencies, 0.99)),
    );
    let path = write_section(section, &body)?;
    println!("wrote {}", path.display());
    Ok(())
}
