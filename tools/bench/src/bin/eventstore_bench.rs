//! Event log benchmark: append throughput against a plain INSERT of the same rows, catch-up
//! read throughput against a plain ordered SELECT of the same rows, and commit-to-subscriber
//! latency while appending at half the measured maximum rate.
//!
//! Run: `cargo run --release -p callback-bench --bin eventstore_bench`
//! `BENCH_SECONDS` sets each throughput run (default 5); `BENCH_READ_EVENTS` the size of the
//! log read back (default 1,000,000).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callback_bench::{env_or, environment, percentile, write_section, BenchDb};
use callback_eventstore::{
    Checkpoint, EventStore, ExpectedVersion, Filter, Metadata, NewEvent, StreamName,
    SubscriptionItem,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use tokio_stream::StreamExt;
use uuid::Uuid;

/// The event type of the log's own benchmark: synthetic, published by no service (the
/// services' events are in `callback-contracts`).
const BENCH_EVENT_TYPE: &str = "BenchEventNoted";

/// A realistic event payload: about 530 bytes of JSON with Chinese text.
#[derive(Serialize, Deserialize)]
struct CallbackNoted {
    callback_id: Uuid,
    tenant_id: String,
    department: String,
    policy_id: String,
    agent_id: String,
    disposition: String,
    scores: Vec<u8>,
    recommend: u8,
    note: String,
    due_at: String,
}

fn payload() -> CallbackNoted {
    CallbackNoted {
        callback_id: Uuid::now_v7(),
        tenant_id: "hospital-east".into(),
        department: "心内科病区".into(),
        policy_id: "discharge-7d".into(),
        agent_id: "agent-0042".into(),
        disposition: "reached".into(),
        scores: vec![5, 4, 5, 5, 4],
        recommend: 9,
        note: "患者出院后第五天回访，恢复情况良好，按时服药，对护理服务和医生解释表示满意，\
               建议门诊复查时间提前告知，已记录并转达科室。"
            .into(),
        due_at: "2026-11-30T17:30:00+08:00".into(),
    }
}

fn metadata() -> Metadata {
    Metadata {
        tenant_id: Some("hospital-east".into()),
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        actor: Some("agent:0042".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: None,
    }
}

fn new_event() -> NewEvent {
    let payload = serde_json::to_string(&payload()).unwrap_or_default();
    NewEvent::from_json(BENCH_EVENT_TYPE, payload).with_metadata(metadata())
}

const RAW_TABLE: &str = "CREATE TABLE raw_events (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id uuid NOT NULL,
    stream_id text NOT NULL,
    stream_category text NOT NULL,
    stream_version bigint NOT NULL,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    payload json NOT NULL,
    metadata json NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now())";

/// The same rows with the log's own keys and indexes (no triggers, no version check).
const RAW_INDEXED_TABLE: &str =
    "CREATE TABLE raw_events_indexed (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES)";

#[derive(Clone, Copy)]
enum Writer {
    EventStore,
    /// Plain INSERT into a table with only a primary key.
    RawInsert,
    /// Plain INSERT into a table with the event log's indexes.
    RawIndexed,
}

/// Events per second for `concurrency` writers appending `batch` events per transaction.
async fn appends(
    store: &EventStore,
    writer: Writer,
    concurrency: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let written = Arc::new(AtomicU64::new(0));
    let run_id = Uuid::now_v7().simple().to_string();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let store = store.clone();
        let written = written.clone();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream_no = 0u64;
            let mut version = 0u64;
            let mut appends_in_stream = 0;
            while Instant::now() < deadline {
                if appends_in_stream == 50 {
                    stream_no += 1;
                    version = 0;
                    appends_in_stream = 0;
                }
                let stream_id = format!("{run_id}-{worker}-{stream_no}");
                let events: Vec<NewEvent> = (0..batch).map(|_| new_event()).collect();
                match writer {
                    Writer::EventStore => {
                        let stream = StreamName::new("bench", stream_id)?;
                        store
                            .append(&stream, ExpectedVersion::Exact(version), &events)
                            .await?;
                    }
                    Writer::RawInsert => {
                        raw_insert(store.pool(), "raw_events", &stream_id, version, &events).await?
                    }
                    Writer::RawIndexed => {
                        raw_insert(
                            store.pool(),
                            "raw_events_indexed",
                            &stream_id,
                            version,
                            &events,
                        )
                        .await?
                    }
                }
                version += batch as u64;
                appends_in_stream += 1;
                written.fetch_add(batch as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The reference: a plain INSERT of the same rows (one row, or one multi-row INSERT), no
/// version check, into a table with only its primary key.
async fn raw_insert(
    pool: &PgPool,
    table: &str,
    stream_id: &str,
    version: u64,
    events: &[NewEvent],
) -> anyhow::Result<()> {
    let metadata: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(&e.metadata).unwrap_or_default())
        .collect();
    if events.len() == 1 {
        sqlx::query(&format!(
            "INSERT INTO {table} (event_id, stream_id, stream_category, stream_version, event_type, \
             schema_version, payload, metadata) VALUES ($1, $2, 'bench', $3, $4, 1, $5::json, $6::json)"
        ))
        .bind(events[0].event_id)
        .bind(stream_id)
        .bind(version as i64 + 1)
        .bind(&events[0].event_type)
        .bind(&events[0].payload)
        .bind(&metadata[0])
        .execute(pool)
        .await?;
    } else {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let versions: Vec<i64> = (1..=events.len() as i64)
            .map(|v| v + version as i64)
            .collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        sqlx::query(&format!(
            "INSERT INTO {table} (event_id, stream_id, stream_category, stream_version, event_type, \
             schema_version, payload, metadata) \
             SELECT e.id, $2, 'bench', e.v, e.t, 1, e.p::json, e.m::json \
             FROM unnest($1::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS e(id, v, t, p, m)"
        ))
        .bind(&ids)
        .bind(stream_id)
        .bind(&versions)
        .bind(&types)
        .bind(&payloads)
        .bind(&metadata)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Tops the log up to `target` events with bulk inserts of the same payload.
async fn fill_log(pool: &PgPool, target: i64) -> anyhow::Result<i64> {
    let payload = serde_json::to_string(&payload())?;
    let metadata = serde_json::to_string(&metadata())?;
    loop {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await?;
        if count >= target {
            sqlx::query("VACUUM ANALYZE events").execute(pool).await?;
            return Ok(count);
        }
        let chunk = (target - count).min(100_000);
        sqlx::query(
            "INSERT INTO events (event_id, stream_id, stream_category, stream_version, event_type, \
             schema_version, payload, metadata) \
             SELECT gen_random_uuid(), 'bench-fill-' || $1 || '-' || (g / 10), 'bench', (g % 10) + 1, \
                    $5, 1, $2::json, $3::json \
             FROM generate_series(0, $4 - 1) AS g",
        )
        .bind(count)
        .bind(&payload)
        .bind(&metadata)
        .bind(chunk)
        .bind(BENCH_EVENT_TYPE)
        .execute(pool)
        .await?;
    }
}

/// Rows/s of a plain ordered SELECT of the log's rows streamed through sqlx, every column
/// taken into an owned value.
async fn plain_select(pool: &PgPool) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut rows = sqlx::query(
        "SELECT position, transaction_id, event_id, stream_id, stream_category, stream_version, \
         event_type, schema_version, payload::text AS payload, metadata::text AS metadata, recorded_at \
         FROM events ORDER BY transaction_id, position",
    )
    .fetch(pool);
    let mut n = 0u64;
    let mut bytes = 0usize;
    while let Some(row) = rows.next().await {
        let row = row?;
        let payload: String = row.try_get("payload")?;
        let stream_id: String = row.try_get("stream_id")?;
        let _: i64 = row.try_get("position")?;
        let _: i64 = row.try_get("transaction_id")?;
        let _: Uuid = row.try_get("event_id")?;
        let _: String = row.try_get("stream_category")?;
        let _: i64 = row.try_get("stream_version")?;
        let _: String = row.try_get("event_type")?;
        let _: i32 = row.try_get("schema_version")?;
        let metadata: String = row.try_get("metadata")?;
        let _: chrono::DateTime<chrono::Utc> = row.try_get("recorded_at")?;
        bytes += payload.len() + metadata.len() + stream_id.len();
        n += 1;
    }
    std::hint::black_box(bytes);
    Ok((n, n as f64 / started.elapsed().as_secs_f64()))
}

/// Events/s of a subscription catching up from the start, each payload decoded into its type.
async fn catch_up(store: &EventStore) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut subscription = store.subscribe(Checkpoint::START, Filter::all());
    let mut n = 0u64;
    while let SubscriptionItem::Event(event) = subscription.next().await? {
        let decoded: CallbackNoted = event.decode()?;
        std::hint::black_box(&decoded);
        n += 1;
    }
    Ok((n, n as f64 / started.elapsed().as_secs_f64()))
}

/// Commit-to-subscriber latency with 32 appenders writing single events at `rate` events/s.
async fn latency(
    store: &EventStore,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<(usize, Duration, Duration, Duration)> {
    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let mut subscription = store.subscribe(
        Checkpoint::START,
        Filter::categories(["bench"]).with_event_types(["Latency.Probe"]),
    );
    // Go live first (this scans past the existing log).
    while !matches!(subscription.next().await?, SubscriptionItem::CaughtUp(_)) {}

    let appenders = 32usize;
    let interval = Duration::from_secs_f64(appenders as f64 / rate);
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for worker in 0..appenders {
        let store = store.clone();
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while Instant::now() < deadline {
                ticker.tick().await;
                let event = NewEvent::new("Latency.Probe", &payload())?.with_metadata(metadata());
                let stream = StreamName::new("bench", format!("latency-{worker}-{}", n / 50))?;
                store
                    .append(&stream, ExpectedVersion::Any, std::slice::from_ref(&event))
                    .await?;
                committed
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(event.event_id, Instant::now());
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut sent = 0;
    let mut received_at: Vec<(Uuid, Instant)> = Vec::new();
    let collector = async {
        loop {
            if let SubscriptionItem::Event(event) = subscription.next().await? {
                received_at.push((event.event_id, Instant::now()));
            }
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    tokio::select! {
        result = collector => result?,
        () = tokio::time::sleep(duration + Duration::from_secs(2)) => {}
    }
    for task in tasks {
        sent += task.await??;
    }
    let committed = committed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut latencies: Vec<Duration> = received_at
        .iter()
        .filter_map(|(id, at)| committed.get(id).map(|c| at.saturating_duration_since(*c)))
        .collect();
    latencies.sort();
    anyhow::ensure!(
        latencies.len() as u64 >= sent * 9 / 10,
        "subscriber received {} of {sent} probes",
        latencies.len()
    );
    Ok((
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_or("BENCH_SECONDS", 5);
    let read_events: i64 = env_or("BENCH_READ_EVENTS", 1_000_000);
    let duration = Duration::from_secs(seconds);
    let db = BenchDb::create("callback_bench_eventstore", 40).await?;
    let store = EventStore::open(db.pool.clone()).await?;
    store.register_categories("bench", &["bench"]).await?;
    sqlx::query(RAW_TABLE).execute(&db.pool).await?;
    sqlx::query(RAW_INDEXED_TABLE).execute(&db.pool).await?;
    let env = environment(&db.pool).await?;
    println!("{env}");

    let mut rows = Vec::new();
    let mut max_single_32 = 0.0f64;
    for batch in [1usize, 100] {
        for concurrency in [1usize, 8, 32] {
            let raw = appends(&store, Writer::RawInsert, concurrency, batch, duration).await?;
            let indexed = appends(&store, Writer::RawIndexed, concurrency, batch, duration).await?;
            let ours = appends(&store, Writer::EventStore, concurrency, batch, duration).await?;
            if batch == 1 && concurrency == 32 {
                max_single_32 = ours;
            }
            let line = format!(
                "| {batch} | {concurrency} | {ours:.0} | {raw:.0} | {:.0}% | {indexed:.0} | {:.0}% |",
                100.0 * ours / raw,
                100.0 * ours / indexed
            );
            println!("{line}");
            rows.push(line);
        }
    }

    let total = fill_log(&db.pool, read_events).await?;
    sqlx::query("SELECT count(*) FROM events")
        .execute(&db.pool)
        .await?; // warm the cache
    let (raw_n, raw_rate) = plain_select(&db.pool).await?;
    let (ours_n, ours_rate) = catch_up(&store).await?;
    println!("read {raw_n} rows plain at {raw_rate:.0}/s; catch-up {ours_n} at {ours_rate:.0}/s");

    let target_rate = max_single_32 / 2.0;
    let (samples, p50, p99, max) = latency(&store, target_rate, duration * 2).await?;
    println!(
        "latency at {target_rate:.0} ev/s: p50 {p50:?} p99 {p99:?} max {max:?} ({samples} samples)"
    );

    let body = format!(
        "## Event log (`eventstore_bench`)\n\n\
         Command: `cargo run --release -p callback-bench --bin eventstore_bench` \
         (BENCH_SECONDS={seconds}, BENCH_READ_EVENTS={read_events}).\n\n{env}\n\
         ### Appends\n\n\
         Events of ~530-byte JSON payload with Chinese text plus ~250 bytes of metadata; every append \
         checks the exact expected version (`ExpectedVersion::Exact`), durable commits. Reference: a \
         plain INSERT of the same rows (one row, or one multi-row INSERT of 100) at the same \
         concurrency, no version check, measured in the same run just before ours: into a table \
         with only a primary key (the strict reference the targets use), and into a table with the \
         log's own keys and indexes (unique stream version, unique event id), which shows what our \
         append logic costs on top of the indexes the log needs. {seconds} s per cell.\n\n\
         | events per append | appenders | event log (events/s) | plain INSERT, PK only (rows/s) | ratio | plain INSERT, log's indexes (rows/s) | ratio |\n\
         |---|---|---|---|---|---|---|\n{}\n\n\
         Targets: single-event appends at 32 appenders >= 60% of the plain rate; 100-event batches \
         >= 80%.\n\n\
         ### Catch-up read\n\n\
         {total} events in the log. Plain ordered SELECT of the same rows through sqlx, every column \
         taken into an owned value: {raw_rate:.0} rows/s ({raw_n} rows). Subscription catch-up \
         (keyset pages of 1,000 in gap-safe order, each payload decoded into its Rust type): \
         {ours_rate:.0} events/s ({ours_n} events), {:.0}% of the plain read (target >= 70%).\n\n\
         ### Commit-to-subscriber latency\n\n\
         32 appenders writing single events at {target_rate:.0} events/s (half the 32-appender \
         maximum above) for {} s; a live subscription filtered to the probe events. Latency from \
         the moment the append returned (commit acknowledged) to the subscriber receiving the \
         event: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {samples} events (target p99 < 50 ms).\n",
        rows.join("\n"),
        100.0 * ours_rate / raw_rate,
        seconds * 2,
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
    );
    let path = write_section("eventstore-bench", &body)?;
    println!("wrote {}", path.display());
    Ok(())
}
