//! Call-logging benchmark: `LogCallAttempt` throughput and latency through gRPC with 32
//! concurrent clients (each claims a callback from scheduling, then reports a no-answer; and
//! again with the callbacks claimed before the clock starts, LogCallAttempt alone), and the
//! delay from an attempt being logged to the scheduling service having applied it.
//!
//! Run: `cargo run --release -p callback-bench --bin call_logging_bench`
//! (`BENCH_SECONDS`, default 10; `BENCH_CALLBACKS` ingested first, default 40,000.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callback_bench::{
    env_or, environment, percentile, raw_single_insert_rate, write_section, BenchDb, InProcess,
};
use callback_contracts::scheduling::CallbackEvent;
use callback_contracts::EventContract;
use callback_eventstore::{Checkpoint, EventStore, Filter, SubscriptionItem};
use callback_kit::{Config, ServiceKind};
use callback_proto::v1::call_logging_client::CallLoggingClient;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{
    ClaimNextRequest, Disposition, IngestBusinessEventRequest, LogCallAttemptRequest,
    PublishPolicyRequest, Subject,
};
use serde_json::json;
use tokio::sync::Mutex;
use tonic::transport::Channel;

const TENANT: &str = "bench";

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}

/// How long each reported call lasted.
const CALL_LENGTH: Duration = Duration::from_secs(30);

/// When each agent's calls took place. An agent makes one call at a time, as a person does, so
/// the reports raise no overlapping-calls flag: the k-th call of an agent started k minutes
/// after a week ago. (Reports stamped "the last 40 seconds" while a client sends dozens a
/// second would say that every agent ran dozens of calls at once, and flag nearly every one.)
struct CallTimeline {
    since: std::time::SystemTime,
    made: Vec<std::sync::atomic::AtomicU32>,
}

impl CallTimeline {
    fn new(agents: usize) -> Self {
        Self {
            since: std::time::SystemTime::now() - Duration::from_secs(7 * 24 * 3600),
            made: (0..agents).map(|_| Default::default()).collect(),
        }
    }

    fn next_start(&self, agent: usize) -> std::time::SystemTime {
        let k = self.made[agent].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.since + Duration::from_secs(60) * k
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let callbacks: usize = env_or("BENCH_CALLBACKS", 40_000);
    let duration = Duration::from_secs(seconds);
    let db = BenchDb::create("callback_bench_call_logging", 33).await?;
    let env = environment(&db.pool).await?;
    println!("{env}");

    // Both services as real gRPC servers in this process, each with its own pool.
    let services = InProcess::start(
        &db.url,
        &[ServiceKind::Scheduling, ServiceKind::CallLogging],
        28,
    )
    .await?;
    let config = services.config.clone();
    let mut scheduling = SchedulingClient::new(services.channel(ServiceKind::Scheduling)?);
    let agents: Vec<_> = (0..32)
        .map(|i| json!({"agent_id": format!("agent-{i}"), "pools": ["desk"]}))
        .collect();
    let settings = json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "pools": ["desk"], "agents": agents, "max_leases_per_agent": 0
    });
    services
        .publish_tenant(TENANT, settings.to_string())
        .await?;
    let policy = json!({
        "policy_id": "bench", "name": "回访", "trigger": {"event_type": "order.closed"},
        "steps": [{"name": "call", "owner": {"kind": "pool", "pool": "desk"},
                   "retry": {"max_attempts": 20, "default_spacing_minutes": 0},
                   "timing": {"kind": "window", "anchor": "trigger", "earliest": {}, "latest": {"days": 7}}}]
    });
    scheduling
        .publish_policy(PublishPolicyRequest {
            tenant_id: TENANT.into(),
            policy_json: policy.to_string(),
        })
        .await?;
    for i in 0..callbacks {
        scheduling
            .ingest_business_event(IngestBusinessEventRequest {
                tenant_id: TENANT.into(),
                source: "crm".into(),
                source_event_id: format!("o{i}"),
                event_type: "order.closed".into(),
                occurred_at: Some(now()),
                subject: Some(Subject {
                    subject_id: format!("c{i}"),
                    name: "客户".into(),
                    phones: vec![format!("1380000{:04}", i % 10_000)],
                    ..Default::default()
                }),
                attributes_json: String::new(),
            })
            .await?;
    }
    // Statistics, as autovacuum keeps them on a database in service: on a table it has never
    // analyzed, the planner guesses that a lookup of 30 streams returns tens of thousands of
    // events and starts parallel workers for it (measured: 15-40 ms for the lease check of a
    // large batch, against 1-3 ms with statistics).
    sqlx::query("ANALYZE").execute(&db.pool).await?;
    let raw = raw_single_insert_rate(&db.pool, 32, Duration::from_secs(5)).await?;

    let store = EventStore::open(db.pool.clone()).await?;
    let timeline = Arc::new(CallTimeline::new(32));
    let max = run_phase(
        &store,
        &config,
        duration,
        None,
        Claims::InTheLoop,
        "max",
        &timeline,
    )
    .await?;
    // Half the measured maximum, spread over the 32 clients.
    let pace = Duration::from_secs_f64(32.0 / (max.rate / 2.0).max(1.0));
    let half = run_phase(
        &store,
        &config,
        duration,
        Some(pace),
        Claims::InTheLoop,
        "half",
        &timeline,
    )
    .await?;
    // LogCallAttempt alone: the callbacks are claimed before the clock starts (a client stops
    // early if it runs out).
    let per_client = (callbacks / 32).min(1250);
    let alone = run_phase(
        &store,
        &config,
        duration,
        None,
        Claims::Beforehand(per_client),
        "alone",
        &timeline,
    )
    .await?;
    services.stop().await;
    let (m, h, a) = (max.summary(), half.summary(), alone.summary());
    println!(
        "LogCallAttempt {:.0}/s p50 {:.1} ms p99 {:.1} ms; propagation p50 {:.1} ms p99 {:.1} ms ({} of {} matched); raw INSERT {raw:.0}/s",
        max.rate, m.latency_p50, m.latency_p99, m.propagation_p50, m.propagation_p99, m.matched, max.attempts
    );
    println!(
        "at half rate ({:.0}/s): propagation p50 {:.1} ms p99 {:.1} ms ({} of {} matched)",
        half.rate, h.propagation_p50, h.propagation_p99, h.matched, half.attempts
    );
    println!(
        "LogCallAttempt alone (claimed beforehand): {:.0}/s p50 {:.1} ms p99 {:.1} ms; propagation p50 {:.1} ms p99 {:.1} ms ({} of {} matched)",
        alone.rate, a.latency_p50, a.latency_p99, a.propagation_p50, a.propagation_p99, a.matched, alone.attempts
    );
    let body = format!(
        "## Call logging (`call_logging_bench`)\n\n\
         Command: `cargo run --release -p callback-bench --bin call_logging_bench` (BENCH_SECONDS={seconds}, \
         BENCH_CALLBACKS={callbacks}). Scheduling and call-logging run in the same process as real gRPC servers \
         (28 connections each); 32 clients each loop: ClaimNext on scheduling, then LogCallAttempt (no answer) on \
         call-logging, which checks the lease with scheduling over gRPC and writes the attempt; scheduling applies \
         it from call-logging's feed.\n\n{env}\n\
         | measure | result | target |\n|---|---|---|\n\
         | LogCallAttempt, 32 concurrent clients | {:.0} attempts/s, p50 {:.1} ms, p99 {:.1} ms | >= 2,000/s |\n\
         | logged -> applied by scheduling (seen as its CallbackAttempted event), at that maximum rate | p50 {:.1} ms, p99 {:.1} ms over {} attempts | p99 < 100 ms |\n\
         | the same, paced at half the maximum ({:.0} attempts/s) | p50 {:.1} ms, p99 {:.1} ms over {} attempts | p99 < 100 ms |\n\
         | LogCallAttempt alone, 32 concurrent clients, each with up to {per_client} callbacks claimed before the clock starts | {:.0} attempts/s over {} attempts, p50 {:.1} ms, p99 {:.1} ms | >= 2,000/s |\n\
         | logged -> applied by scheduling, in that phase | p50 {:.1} ms, p99 {:.1} ms over {} attempts | p99 < 100 ms |\n\
         | raw single-row INSERT, 32 connections, same run | {raw:.0} rows/s | |\n\n\
         In the first rows every attempt needs a fresh claim (a second gRPC call and transaction) inside the measured \
         loop; the \"alone\" row measures LogCallAttempt by itself (with its lease check and scheduling applying the \
         outcome). The 2 cores are shared by both services, PostgreSQL and the 32 clients.\n",
        max.rate,
        m.latency_p50,
        m.latency_p99,
        m.propagation_p50,
        m.propagation_p99,
        m.matched,
        half.rate,
        h.propagation_p50,
        h.propagation_p99,
        h.matched,
        alone.rate,
        alone.attempts,
        a.latency_p50,
        a.latency_p99,
        a.propagation_p50,
        a.propagation_p99,
        a.matched,
    );
    let path = write_section("call-logging-bench", &body)?;
    println!("wrote {}", path.display());
    Ok(())
}

struct Phase {
    rate: f64,
    attempts: u64,
    latencies: Vec<Duration>,
    propagation: Vec<Duration>,
}

/// A phase's percentiles in milliseconds, and how many attempts were seen applied.
struct Summary {
    latency_p50: f64,
    latency_p99: f64,
    propagation_p50: f64,
    propagation_p99: f64,
    matched: usize,
}

impl Phase {
    fn summary(&self) -> Summary {
        let ms = |sorted: &[Duration], q: f64| percentile(sorted, q).as_secs_f64() * 1000.0;
        Summary {
            latency_p50: ms(&self.latencies, 0.5),
            latency_p99: ms(&self.latencies, 0.99),
            propagation_p50: ms(&self.propagation, 0.5),
            propagation_p99: ms(&self.propagation, 0.99),
            matched: self.propagation.len(),
        }
    }
}

/// How the clients of a phase get the callbacks they log attempts for.
#[derive(Clone, Copy)]
enum Claims {
    /// Each attempt is preceded by its own ClaimNext, inside the measured loop.
    InTheLoop,
    /// Each client claims this many callbacks before the clock starts and then only logs.
    Beforehand(usize),
}

/// One measured phase: 32 clients log no-answers, unpaced (`pace` None) or each at one attempt
/// per `pace`; attempt ids carry `tag` so phases do not mix.
async fn run_phase(
    store: &EventStore,
    config: &Config,
    duration: Duration,
    pace: Option<Duration>,
    claims: Claims,
    tag: &str,
    calls_made: &Arc<CallTimeline>,
) -> anyhow::Result<Phase> {
    let channel = |kind: ServiceKind| -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(config.url(kind).to_owned())?.connect_lazy())
    };
    let logged_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let applied_at: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let watcher = {
        let applied_at = applied_at.clone();
        let mut subscription = store.subscribe(
            Checkpoint::START,
            Filter::categories([CallbackEvent::CATEGORY])
                .with_event_types([CallbackEvent::ATTEMPTED]),
        );
        tokio::spawn(async move {
            while let Ok(item) = subscription.next().await {
                if let SubscriptionItem::Event(event) = item {
                    if let Ok(payload) = event.decode::<serde_json::Value>() {
                        let id = payload["attempt_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        applied_at.lock().await.push((id, Instant::now()));
                    }
                }
            }
        })
    };
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    // The clock starts once every client has its claims (if it claims beforehand).
    let ready = Arc::new(tokio::sync::Barrier::new(33));
    let mut tasks = Vec::new();
    for worker in 0..32usize {
        let mut scheduling = SchedulingClient::new(channel(ServiceKind::Scheduling)?);
        let mut calls = CallLoggingClient::new(channel(ServiceKind::CallLogging)?);
        let (latencies, logged_at, ready) = (latencies.clone(), logged_at.clone(), ready.clone());
        let calls_made = calls_made.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let agent = format!("agent-{worker}");
            let claim = |scheduling: &mut SchedulingClient<Channel>| {
                let request = ClaimNextRequest {
                    tenant_id: TENANT.into(),
                    agent_id: agent.clone(),
                    ..Default::default()
                };
                let mut scheduling = scheduling.clone();
                async move { anyhow::Ok(scheduling.claim_next(request).await?.into_inner().claimed) }
            };
            let mut held = Vec::new();
            let mut claimed_beforehand = Ok(());
            if let Claims::Beforehand(count) = claims {
                while held.len() < count {
                    match claim(&mut scheduling).await {
                        Ok(Some(c)) => held.push(c),
                        Ok(None) => break,
                        Err(error) => {
                            claimed_beforehand = Err(error);
                            break;
                        }
                    }
                }
            }
            // Every client reaches the barrier, also one that failed, so the run ends with the
            // error instead of waiting for it.
            ready.wait().await;
            claimed_beforehand?;
            let stop_at = Instant::now() + duration;
            let mut n = 0u64;
            let mut mine = Vec::new();
            let mut ticker = pace.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while Instant::now() < stop_at {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                let claimed = match claims {
                    Claims::InTheLoop => claim(&mut scheduling).await?,
                    Claims::Beforehand(_) => match held.pop() {
                        Some(c) => Some(c),
                        None => break,
                    },
                };
                let Some(c) = claimed else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let attempt_id = format!("{tag}-{agent}-{n}");
                let call_start = calls_made.next_start(worker);
                let request = LogCallAttemptRequest {
                    attempt_id: attempt_id.clone(),
                    tenant_id: TENANT.into(),
                    callback_id: c.callback_id,
                    lease_id: c.lease_id,
                    agent_id: agent.clone(),
                    channel: "phone".into(),
                    started_at: Some(prost_types::Timestamp::from(call_start)),
                    ended_at: Some(prost_types::Timestamp::from(call_start + CALL_LENGTH)),
                    disposition: Some(Disposition {
                        kind: "no_answer".into(),
                        named_time: None,
                    }),
                    notes: "无人接听，稍后再拨".into(),
                    ..Default::default()
                };
                let t = Instant::now();
                calls.log_call_attempt(request).await?;
                let done = Instant::now();
                mine.push(done - t);
                logged_at.lock().await.insert(attempt_id, done);
                n += 1;
            }
            latencies.lock().await.extend(mine);
            anyhow::Ok(n)
        }));
    }
    ready.wait().await;
    let started = Instant::now();
    let mut attempts = 0;
    for task in tasks {
        attempts += task.await??;
    }
    let rate = attempts as f64 / started.elapsed().as_secs_f64();
    // Let the outcomes still in flight arrive (bounded), then match.
    let settle = Instant::now() + Duration::from_secs(30);
    while Instant::now() < settle
        && (applied_at
            .lock()
            .await
            .iter()
            .filter(|(id, _)| id.starts_with(tag))
            .count() as u64)
            < attempts
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    let logged_at = logged_at.lock().await;
    let mut propagation: Vec<Duration> = applied_at
        .lock()
        .await
        .iter()
        .filter_map(|(id, at)| {
            logged_at
                .get(id)
                .map(|logged| at.saturating_duration_since(*logged))
        })
        .collect();
    propagation.sort();
    let mut latencies = std::mem::take(&mut *latencies.lock().await);
    latencies.sort();
    Ok(Phase {
        rate,
        attempts,
        latencies,
        propagation,
    })
}
