//! Complaint-routing benchmark: `FileComplaint` throughput and latency through gRPC with 32
//! concurrent clients, and the cost of the timer sweep (clock evaluation) as open complaints
//! grow to 100,000: an idle sweep (nothing due), a sweep with 1,000 timers due, and a sweep
//! where every open complaint's timer is due at once.
//!
//! Run: `cargo run --release -p callback-bench --bin complaint_routing_bench`
//! (`BENCH_SECONDS`, default 10; `BENCH_OPEN`, the largest open population, default 100,000.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use callback_bench::{env_or, environment, percentile, write_section, BenchDb, InProcess};
use callback_complaint_routing::app::ComplaintRouting;
use callback_complaint_routing::domain::{Action, Customer, Intake};
use callback_eventstore::EventStore;
use callback_kit::ServiceKind;
use callback_proto::v1::complaint_routing_client::ComplaintRoutingClient;
use callback_proto::v1::{ComplaintCustomer, FileComplaintRequest, PublishRoutingRulesRequest};
use callback_rules::ManualClock;
use chrono::{TimeZone, Utc};
use serde_json::json;
use tokio::sync::Mutex;

const TENANT: &str = "bench";
const PROBES: usize = 1_000;

/// Round-the-clock office hours keep the arithmetic plain: 1 working hour = 1 hour.
fn rules() -> String {
    json!({
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "00:00", "end": "24:00"}],
                     "working_weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]},
        "default_route": {"class": "C", "origin": "our_service", "department": "desk"},
        "categories": [
            {"category": "service", "class": "C", "origin": "our_service", "department": "desk"},
            {"category": "probe", "class": "C", "origin": "our_service", "department": "desk"},
            {"category": "bulk", "class": "E", "origin": "our_service", "department": "desk"}
        ],
        "targets": {
            "A": {"first_response_hours": 1, "update_hours": 8, "resolution_hours": 40},
            "B": {"first_response_hours": 2, "update_hours": 8, "resolution_hours": 40},
            "C": {"first_response_hours": 1, "update_hours": 16, "resolution_hours": 40},
            "D": {"first_response_hours": 8, "update_hours": 24, "resolution_hours": 80},
            "E": {"first_response_hours": 2000, "update_hours": 4000, "resolution_hours": 8000}
        },
        "departments": {"desk": {"handler": "desk-pool", "head": "desk-head", "manager": "manager"}},
        "general_manager": "gm"
    })
    .to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let largest: usize = env_or("BENCH_OPEN", 100_000);
    let filing = filing_throughput(Duration::from_secs(seconds)).await?;
    let (env, sweeps, herd) = sweep_costs(largest).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    let mut rows = String::new();
    for s in &sweeps {
        rows.push_str(&format!(
            "| {} | {:.2} ms / {:.2} ms | {:.0} ms ({:.2} ms per complaint) |\n",
            s.open,
            ms(percentile(&s.idle, 0.5)),
            ms(percentile(&s.idle, 0.99)),
            ms(s.probes),
            ms(s.probes) / PROBES as f64,
        ));
        println!(
            "open {}: idle sweep p50 {:.2} ms p99 {:.2} ms; {PROBES} due {:.0} ms",
            s.open,
            ms(percentile(&s.idle, 0.5)),
            ms(percentile(&s.idle, 0.99)),
            ms(s.probes)
        );
    }
    println!(
        "FileComplaint {:.0}/s p50 {:.1} ms p99 {:.1} ms; all {largest} due at once: {:.1} s",
        filing.rate,
        ms(percentile(&filing.latencies, 0.5)),
        ms(percentile(&filing.latencies, 0.99)),
        herd.as_secs_f64()
    );
    let body = format!(
        "## Complaint routing (`complaint_routing_bench`)\n\n\
         Command: `cargo run --release -p callback-bench --bin complaint_routing_bench` (BENCH_SECONDS={seconds}, \
         BENCH_OPEN={largest}).\n\n{env}\n\
         **Filing.** Complaint routing runs in this process as a real gRPC server (28 connections); 32 clients \
         each loop FileComplaint with a new customer, over 5,000 topics (so groups of 5 form and are upgraded \
         along the way, as in real traffic).\n\n\
         | measure | result |\n|---|---|\n\
         | FileComplaint, 32 concurrent clients | {:.0} complaints/s, p50 {:.1} ms, p99 {:.1} ms over {} filings |\n\n\
         **Timer sweep (clock evaluation).** The application in-process on simulated time. Open complaints are \
         filed in stages; at each stage the sweep is timed idle (nothing due: 20 runs) and with {PROBES} complaints \
         whose first-response clock has just run out (each fires a breach and an escalation: 2 events, the \
         snapshot row and the next timer rewritten).\n\n\
         | open complaints | idle sweep p50 / p99 | sweep with {PROBES} due |\n|---|---|---|\n{rows}\n\
         Every one of the {largest} open complaints due at once (a long outage, or a calendar with no working \
         time for weeks): one sweep took {:.1} s ({:.2} ms per complaint).\n\n\
         The sweep selects due rows through the partial index on `next_timer_at`, so an idle sweep does not \
         grow with open complaints; the cost is per due timer (one snapshot read, the fold of the new events, \
         one append, one row update), not per open complaint.\n",
        filing.rate,
        ms(percentile(&filing.latencies, 0.5)),
        ms(percentile(&filing.latencies, 0.99)),
        filing.latencies.len(),
        herd.as_secs_f64(),
        herd.as_secs_f64() * 1000.0 / largest as f64,
    );
    let path = write_section("complaint-routing-bench", &body)?;
    println!("wrote {}", path.display());
    Ok(())
}

struct Filing {
    rate: f64,
    latencies: Vec<Duration>,
}

async fn filing_throughput(duration: Duration) -> anyhow::Result<Filing> {
    let db = BenchDb::create("callback_bench_complaints", 4).await?;
    let services = InProcess::start(&db.url, &[ServiceKind::ComplaintRouting], 28).await?;
    let mut client = ComplaintRoutingClient::new(services.channel(ServiceKind::ComplaintRouting)?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = PublishRoutingRulesRequest {
            tenant_id: TENANT.into(),
            rules_json: rules(),
        };
        match client.publish_routing_rules(request).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let stop_at = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..32usize {
        let mut client = client.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut n = 0usize;
            while Instant::now() < stop_at {
                let request = FileComplaintRequest {
                    tenant_id: TENANT.into(),
                    source: "hotline".into(),
                    source_id: format!("{worker}-{n}"),
                    channel: "hotline".into(),
                    customer: Some(ComplaintCustomer {
                        customer_id: format!("c{worker}-{n}"),
                        name: "客户".into(),
                        phones: vec!["13800138000".into()],
                    }),
                    text: "维修师傅迟到两个小时，也没有提前通知".into(),
                    category: "service".into(),
                    topic: format!("topic-{}", (worker * 7919 + n * 104_729) % 5_000),
                    ..Default::default()
                };
                let t = Instant::now();
                client.file_complaint(request).await?;
                mine.push(t.elapsed());
                n += 1;
            }
            latencies.lock().await.extend(mine);
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    services.stop().await;
    let mut latencies = std::mem::take(&mut *latencies.lock().await);
    latencies.sort();
    Ok(Filing {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

struct SweepStage {
    open: usize,
    idle: Vec<Duration>,
    probes: Duration,
}

fn intake(category: &str, id: usize) -> Intake {
    Intake {
        tenant_id: TENANT.into(),
        source: category.into(),
        source_id: id.to_string(),
        channel: "hotline".into(),
        customer: Customer {
            customer_id: format!("{category}-{id}"),
            ..Customer::default()
        },
        text: "噪音扰民".into(),
        category: category.into(),
        topic: format!("{category}-{id}"),
        ..Intake::default()
    }
}

/// Files `ids` as complaints of `category`, 16 at a time.
async fn file_many(
    app: &ComplaintRouting,
    category: &'static str,
    ids: std::ops::Range<usize>,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(ids.start));
    let filed: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, next, filed, end) = (app.clone(), next.clone(), filed.clone(), ids.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id >= end {
                    return Ok::<_, anyhow::Error>(());
                }
                let filing = app.file(intake(category, id)).await?;
                filed
                    .lock()
                    .await
                    .push(filing.complaint.state.complaint_id());
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let filed = std::mem::take(&mut *filed.lock().await);
    Ok(filed)
}

async fn sweep_costs(largest: usize) -> anyhow::Result<(String, Vec<SweepStage>, Duration)> {
    let db = BenchDb::create("callback_bench_complaint_sweep", 20).await?;
    let env = environment(&db.pool).await?;
    println!("{env}");
    let store = EventStore::open(db.pool.clone()).await?;
    store
        .register_categories("complaint-routing", callback_complaint_routing::CATEGORIES)
        .await?;
    let start = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 28, 9, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let clock = ManualClock::new(start);
    // Nothing listens there: resolutions' callback requests fail fast and wait.
    let scheduling = callback_kit::grpc::channel("http://127.0.0.1:9")?;
    let vault = callback_vault::Vault::with_fresh_master_key(db.pool.clone()).await?;
    let app =
        callback_complaint_routing::open(store, vault, Arc::new(clock.clone()), scheduling).await?;
    app.publish_rules(TENANT, &rules()).await?;

    let mut stages = Vec::new();
    let mut open = 0usize;
    let mut probe_ids = 0usize;
    for target in [largest / 10, largest / 2, largest] {
        // Bulk complaints (class E) whose first timer is 2,000 hours away.
        let seeded = Instant::now();
        file_many(&app, "bulk", open..target.saturating_sub(PROBES)).await?;
        open = target.saturating_sub(PROBES);
        println!(
            "seeded {open} open complaints in {:.0} s",
            seeded.elapsed().as_secs_f64()
        );
        let mut idle = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let fired = app.sweep_timers().await?;
            idle.push(t.elapsed());
            anyhow::ensure!(fired == 0, "an idle sweep fired {fired} timers");
        }
        idle.sort();
        // Probes (class C, 1 working hour to first response), then one hour later.
        let probes = file_many(&app, "probe", probe_ids..probe_ids + PROBES).await?;
        probe_ids += PROBES;
        clock.advance(chrono::Duration::minutes(61));
        let t = Instant::now();
        let fired = app.sweep_timers().await?;
        let probe_sweep = t.elapsed();
        anyhow::ensure!(
            fired == PROBES,
            "the probe sweep fired {fired}, not {PROBES}"
        );
        stages.push(SweepStage {
            open: open + PROBES,
            idle,
            probes: probe_sweep,
        });
        // Close the probes so they do not fall due again in the next stage.
        for id in probes {
            app.act(
                TENANT,
                id,
                "desk-1",
                Action::Reject {
                    explanation: "bench".into(),
                },
            )
            .await?;
        }
    }
    // Every bulk complaint's first-response clock runs out at once.
    clock.advance(chrono::Duration::hours(2001));
    let t = Instant::now();
    let fired = app.sweep_timers().await?;
    let herd = t.elapsed();
    anyhow::ensure!(fired == open, "the herd sweep fired {fired}, not {open}");
    app.store().pool().close().await;
    Ok((env, stages, herd))
}
