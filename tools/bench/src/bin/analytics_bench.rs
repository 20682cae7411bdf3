//! Analytics benchmark: a log of at least 5,000,000 callback events (about 1.1 million
//! callbacks over a year, the shape scheduling writes), then in the same run:
//! - the raw ordered read rate of the log (a plain streaming `SELECT ... ORDER BY` of every row);
//! - the callback-facts projection catching up on it from zero (store subscription, batches
//!   folded in memory and written once with their checkpoint), and a full rebuild (reset, then
//!   catch up again);
//! - report query latency on the projected data.
//!
//! Run: `cargo run --release -p callback-bench --bin analytics_bench`
//! (`BENCH_EVENTS`, default 5,000,000; `BENCH_REUSE=1` keeps the log of an earlier run on the
//! same server instead of writing it again.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use callback_analytics::app::Analytics;
use callback_analytics::facts::{
    SchedulingFacts, BATCH, SCHEDULING_CATEGORIES, SCHEDULING_EVENT_TYPES,
};
use callback_analytics::report::ReportSpec;
use callback_bench::{env_or, environment, percentile, write_section, BenchDb};
use callback_contracts::scheduling::{
    CallbackEvent, Channel, Disposition, RetryRule, Scheduled, TenantPublished,
};
use callback_contracts::EventContract;
use callback_eventstore::{
    BatchProjection, Checkpoint, EventStore, ExpectedVersion, Filter, NewEvent, Pipeline,
    RecordedEvent, StreamName, SubscriptionItem,
};
use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use serde_json::json;
use sqlx::Row;
use tokio_stream::StreamExt;
use uuid::Uuid;

const TENANT: &str = "bench";

fn start_of_year() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// One callback's events: scheduled, claimed, 1-3 attempts, completed or lost.
fn callback_events(i: u64) -> Vec<NewEvent> {
    // Callbacks are planned as facts arrive, so due times follow the log with a few days'
    // jitter (a discharge today is called back within the week): callback i of about a million
    // over the year, plus 0-7 days.
    let due = start_of_year()
        + Span::seconds((i * 31) as i64)
        + Span::minutes(((i * 7_919) % (7 * 24 * 60)) as i64);
    let deadline = due + Span::days(7);
    let agent = format!("agent-{:02}", i % 50);
    let attempts = 1 + i % 3;
    let reached = !i.is_multiple_of(5);
    let callback_id = Uuid::from_u128(u128::from(i));
    let mut events = vec![CallbackEvent::CallbackScheduled(Box::new(Scheduled {
        callback_id,
        tenant_id: TENANT.into(),
        policy_id: format!("policy-{}", i % 5),
        policy_version: 1,
        step_index: 0,
        step: "first".into(),
        occurrence: 1,
        anchor_at: due,
        due_at: due,
        deadline,
        give_up_at: deadline,
        priority: 5,
        channel: Channel::Phone,
        questionnaire_id: Some("discharge-v1".into()),
        owner_agent_id: None,
        pool: "nurses".into(),
        pool_after: due,
        subject_id: format!("patient-{i}"),
        department: Some(format!("ward-{:02}", i % 20)),
        retry: RetryRule::default(),
        fact_stream: format!("business_event-{TENANT}:his:{i}"),
    }))];
    events.push(CallbackEvent::CallbackClaimed {
        agent_id: agent.clone(),
        lease_id: Uuid::now_v7(),
        lease_until: due + Span::minutes(15),
        at: due,
    });
    for a in 0..attempts {
        let last = a + 1 == attempts;
        let disposition = if last && reached {
            Disposition::Reached
        } else {
            Disposition::NoAnswer
        };
        events.push(CallbackEvent::CallbackAttempted {
            attempt_id: format!("a-{i}-{a}"),
            agent_id: agent.clone(),
            disposition,
            at: due + Span::hours(a as i64),
        });
    }
    let end = due + Span::hours(attempts as i64);
    events.push(if reached {
        CallbackEvent::CallbackCompleted { at: end }
    } else {
        CallbackEvent::CallbackLost {
            reason: "attempts exhausted".into(),
            attempts: attempts as u32,
            at: end,
        }
    });
    events
        .iter()
        .map(|event| callback_kit::events::new_event(event).expect("a callback event encodes"))
        .collect()
}

async fn generate(store: &EventStore, target: u64) -> anyhow::Result<(u64, u64)> {
    let tenant: TenantPublished = serde_json::from_value(json!({"tenant_id": TENANT,
        "settings": {"calendar": {"time_zone": "Asia/Shanghai",
        "windows": [{"start": "08:00", "end": "17:30"}]}}}))?;
    store
        .append(
            &StreamName::new(TenantPublished::CATEGORY, TENANT)?,
            ExpectedVersion::Any,
            &[callback_kit::events::new_event(&tenant)?],
        )
        .await?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let written = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, next, written) = (store.clone(), next.clone(), written.clone());
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            while written.load(Relaxed) < target {
                let i = next.fetch_add(1, Relaxed);
                let events = callback_events(i);
                let stream = StreamName::new(
                    CallbackEvent::CATEGORY,
                    Uuid::from_u128(u128::from(i)).to_string(),
                )?;
                store
                    .append(&stream, ExpectedVersion::NoStream, &events)
                    .await?;
                written.fetch_add(events.len() as u64, Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    use std::sync::atomic::Ordering::Relaxed;
    Ok((written.load(Relaxed), next.load(Relaxed)))
}

/// A plain streaming SELECT of every row in log order: the ceiling for any reader.
async fn raw_read(store: &EventStore) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut rows = sqlx::query(
        "SELECT transaction_id::text::bigint, position, event_id, stream_id, stream_version, event_type, \
         payload::text, metadata::text, recorded_at FROM events ORDER BY transaction_id, position",
    )
    .fetch(store.pool());
    let mut n = 0u64;
    while let Some(row) = rows.next().await {
        let row = row?;
        let _: &str = row.try_get(6)?;
        n += 1;
    }
    Ok((n, started.elapsed()))
}

/// Clears the callback facts and their checkpoint, as a rebuild does.
async fn reset_read_model(store: &EventStore) -> anyhow::Result<()> {
    let mut tx = store.pool().begin().await?;
    sqlx::query("TRUNCATE an_tenants, an_callbacks")
        .execute(&mut *tx)
        .await?;
    store
        .reset_checkpoint(&mut tx, "analytics.scheduling_facts")
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The projection from zero to the end of the log, in batches with their checkpoint, as the
/// analytics consumer applies them while catching up: each batch is folded while the previous
/// one is written.
async fn catch_up(store: &EventStore) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    // The same filter the analytics consumer asks the scheduling feed for.
    let filter = Filter::categories(SCHEDULING_CATEGORIES).with_event_types(SCHEDULING_EVENT_TYPES);
    let projection = Arc::new(SchedulingFacts);
    let stored = store.load_checkpoint(projection.name()).await?;
    let mut subscription = store.subscribe(stored, filter);
    let mut pipeline = Pipeline::new(store.clone(), projection, stored);
    let mut batch: Vec<RecordedEvent> = Vec::with_capacity(BATCH);
    let mut applied = 0u64;
    loop {
        match subscription.next().await? {
            SubscriptionItem::Event(event) => {
                batch.push(event);
                if batch.len() == BATCH {
                    let up_to = batch[batch.len() - 1].checkpoint;
                    pipeline.submit(&batch, up_to).await?;
                    applied += batch.len() as u64;
                    batch.clear();
                }
            }
            SubscriptionItem::CaughtUp(up_to) => {
                pipeline.submit(&batch, up_to).await?;
                applied += batch.len() as u64;
                pipeline.settle().await?;
                break;
            }
        }
    }
    Ok((applied, started.elapsed()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let target: u64 = env_or("BENCH_EVENTS", 5_000_000);
    let db = BenchDb::reuse_or_create("callback_bench_analytics", 12).await?;
    let env = environment(&db.pool).await?;
    println!("{env}");
    let store = EventStore::open(db.pool.clone()).await?;
    store
        .register_categories("scheduling", callback_contracts::scheduling::CATEGORIES)
        .await?;
    callback_analytics::migrator().run(&db.pool).await?;

    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await?;
    let (events, callbacks) = if existing as u64 >= target {
        println!("reusing the {existing} events of an earlier run (BENCH_REUSE=1)");
        let callbacks: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
                .bind(CallbackEvent::SCHEDULED)
                .fetch_one(&db.pool)
                .await?;
        (existing as u64, callbacks as u64)
    } else {
        anyhow::ensure!(
            existing == 0,
            "the kept database has only {existing} events: run once without BENCH_REUSE"
        );
        let t = Instant::now();
        let (events, callbacks) = generate(&store, target).await?;
        println!(
            "wrote {events} events ({callbacks} callbacks) in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        (events, callbacks)
    };
    sqlx::query("VACUUM ANALYZE events")
        .execute(&db.pool)
        .await?;
    // A reused database keeps the previous run's read model: start from zero.
    reset_read_model(&store).await?;

    // The ceiling: the faster of two plain reads (the second with a warm cache).
    let (raw_n, first_raw) = raw_read(&store).await?;
    let (_, second_raw) = raw_read(&store).await?;
    let raw_time = first_raw.min(second_raw);
    let raw_rate = raw_n as f64 / raw_time.as_secs_f64();
    println!(
        "raw ordered read: {raw_n} rows in {:.1} s ({raw_rate:.0}/s)",
        raw_time.as_secs_f64()
    );

    // The store's own part: the subscription alone, decoding nothing.
    let t = Instant::now();
    let mut subscription =
        store.subscribe(Checkpoint::START, Filter::categories(SCHEDULING_CATEGORIES));
    let mut read = 0u64;
    while let SubscriptionItem::Event(_) = subscription.next().await? {
        read += 1;
    }
    let subscription_time = t.elapsed();
    let subscription_rate = read as f64 / subscription_time.as_secs_f64();
    println!(
        "subscription alone: {read} events in {:.1} s",
        subscription_time.as_secs_f64()
    );

    let (applied, first) = catch_up(&store).await?;
    // Throughput over the whole log: the events the projection does not use are part of
    // catching up too (skipped by the feed's filter).
    let first_rate = events as f64 / first.as_secs_f64();
    println!(
        "catch-up: {events} events ({applied} applied) in {:.1} s ({first_rate:.0}/s)",
        first.as_secs_f64()
    );

    // Full rebuild: clear the read model and its checkpoint, then catch up again.
    let t = Instant::now();
    reset_read_model(&store).await?;
    let (rebuilt, _) = catch_up(&store).await?;
    let rebuild = t.elapsed();
    anyhow::ensure!(
        rebuilt == applied,
        "the rebuild applied {rebuilt}, not {applied}"
    );
    println!("rebuild: {:.1} s", rebuild.as_secs_f64());
    // As autovacuum does soon after a catch-up: index-only scans need the visibility map.
    sqlx::query("VACUUM ANALYZE an_callbacks")
        .execute(&db.pool)
        .await?;

    // Report queries as a dashboard asks them.
    let app = Analytics::new(store.clone(), Arc::new(callback_rules::SystemClock));
    let month = |m: u32| Utc.with_ymd_and_hms(2026, m, 1, 0, 0, 0).unwrap();
    let shapes: Vec<(&str, ReportSpec)> = vec![
        (
            "callbacks by department, one month",
            ReportSpec::new(
                TENANT,
                "callbacks",
                &["department".into()],
                "",
                Some(month(3)),
                Some(month(4)),
                &[],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        (
            "callbacks by agent and day, one month",
            ReportSpec::new(
                TENANT,
                "callbacks",
                &["agent".into()],
                "day",
                Some(month(6)),
                Some(month(7)),
                &[],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        (
            "callbacks by department and week, one quarter, one policy",
            ReportSpec::new(
                TENANT,
                "callbacks",
                &["department".into()],
                "week",
                Some(month(7)),
                Some(month(10)),
                &[("policy".into(), "policy-2".into())],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        (
            "callbacks by department and month, the whole year",
            ReportSpec::new(
                TENANT,
                "callbacks",
                &["department".into()],
                "month",
                Some(month(1)),
                Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()),
                &[],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
    ];
    let mut rows = String::new();
    let mut dashboard: Vec<Duration> = Vec::new();
    for (i, (name, spec)) in shapes.iter().enumerate() {
        let mut times = Vec::new();
        for _ in 0..30 {
            let t = Instant::now();
            let report = app.report(spec).await?;
            times.push(t.elapsed());
            anyhow::ensure!(!report.rows.is_empty(), "{name}: no rows");
        }
        times.sort();
        if i < 3 {
            dashboard.extend(&times);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name}: p50 {:.1} ms p99 {:.1} ms",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        );
        rows.push_str(&format!(
            "| {name} | {:.1} ms | {:.1} ms |\n",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        ));
    }
    dashboard.sort();
    let dashboard_p99 = percentile(&dashboard, 0.99).as_secs_f64() * 1000.0;
    let body = format!(
        "## Analytics (`analytics_bench`)\n\n\
         Command: `cargo run --release -p callback-bench --bin analytics_bench` (BENCH_EVENTS={target}). \
         The log holds {events} events: {callbacks} callbacks over one year as scheduling writes them \
         (scheduled, claimed, 1-3 attempts, completed or lost; 20 departments, 50 agents, 5 policies; due times \
         following the log with 0-7 days' jitter, as callbacks planned from facts as they arrive). \
         The callback-facts projection runs in-process on the store's subscription (prefetching pages), \
         folding each batch of {BATCH} events in memory and writing it with its checkpoint in one \
         transaction (new callbacks copied in, the others merged by one multi-row upsert), the next batch \
         folded while the previous one is written (as the service's consumers do). `BENCH_REUSE=1` reuses the log of an earlier run on the same server.\n\n{env}\n\
         | measure | result |\n|---|---|\n\
         | raw ordered read (plain streaming SELECT of every row, the faster of two, same run) | {raw_rate:.0} events/s ({:.1} s) |\n\
         | the store's subscription alone (no projection) | {subscription_rate:.0} events/s ({:.1} s), {:.0}% of the raw read |\n\
         | projection catch-up from zero (events of the log per second; claims, which it does not use, filtered out by the feed) | {first_rate:.0} events/s ({:.1} s), **{:.0}% of the raw read** (target >= 50%) |\n\
         | full rebuild (reset read model and checkpoint, catch up) | {:.1} s |\n\
         | dashboard report queries (the first three shapes below) | p99 {dashboard_p99:.1} ms (target < 100 ms) |\n\n\
         | report query (30 runs each, on {callbacks} callbacks) | p50 | p99 |\n|---|---|---|\n{rows}\n\
         Reports aggregate the fact rows at query time through the index on (tenant, policy, due time), \
         so their cost grows with the callbacks in the range (and policy) asked for: a month is about a \
         twelfth of the table, a quarter of one policy a twentieth, the whole year all of it.\n",
        raw_time.as_secs_f64(),
        subscription_time.as_secs_f64(),
        100.0 * subscription_rate / raw_rate,
        first.as_secs_f64(),
        100.0 * first_rate / raw_rate,
        rebuild.as_secs_f64(),
    );
    let path = write_section("analytics-bench", &body)?;
    println!("wrote {}", path.display());
    Ok(())
}
