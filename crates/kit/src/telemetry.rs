//! Logs and traces.
//!
//! Every process installs an OpenTelemetry tracer so trace ids exist and travel: in gRPC
//! metadata (`traceparent`) between services and in event metadata through the log, so one
//! callback's trace spans services. Spans are exported over OTLP/gRPC only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Personal data (names, phone numbers, notes, answers) never goes into a log line or span
//! field; log ids and counts instead.

use std::collections::HashMap;

use callback_eventstore::Metadata;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;

use crate::config::ConfigError;

const DEFAULT_FILTER: &str = "info,sqlx=warn,h2=warn,tower=warn,hyper=warn";

/// Flushes and stops trace export when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("trace export shutdown: {error}");
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Installs logging and tracing for the process. Reads `RUST_LOG` (the logs' filter),
/// `CALLBACK_TRACE_FILTER` (the exported spans' filter), `CALLBACK_LOG_FORMAT` and
/// `OTEL_EXPORTER_OTLP_ENDPOINT`. A second call (tests) keeps the first subscriber.
pub fn init(service_name: &str) -> Result<TelemetryGuard, ConfigError> {
    let format = match std::env::var("CALLBACK_LOG_FORMAT").ok().as_deref() {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError {
                variable: "CALLBACK_LOG_FORMAT".into(),
                reason: format!("`{other}` is neither `pretty` nor `json`"),
            })
        }
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) => EnvFilter::try_new(&text).map_err(|e| ConfigError {
            variable: "RUST_LOG".into(),
            reason: e.to_string(),
        })?,
        Err(_) => EnvFilter::new(DEFAULT_FILTER),
    };

    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_owned())
            .build(),
    );
    if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| ConfigError {
                variable: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                reason: e.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel_layer =
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name.to_owned()));

    // Export has a filter of its own: `RUST_LOG=warn` quiets the logs, not the traces.
    let trace_filter = match std::env::var("CALLBACK_TRACE_FILTER") {
        Ok(text) => EnvFilter::try_new(&text).map_err(|e| ConfigError {
            variable: "CALLBACK_TRACE_FILTER".into(),
            reason: e.to_string(),
        })?,
        Err(_) => EnvFilter::new(DEFAULT_FILTER),
    };
    let registry = tracing_subscriber::registry().with(otel_layer.with_filter(trace_filter));
    let installed = match format {
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                    .with_filter(filter),
            )
            .try_init()
            .is_ok(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_filter(filter),
            )
            .try_init()
            .is_ok(),
    };
    Ok(TelemetryGuard {
        provider: installed.then_some(provider),
    })
}

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapReader<'a>(&'a HashMap<String, String>);

impl Extractor for MapReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetadataCarrier<'a>(&'a mut MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderReader<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject_into(metadata: &mut MetadataMap) {
    TraceContextPropagator::new()
        .inject_context(&Span::current().context(), &mut MetadataCarrier(metadata));
}

/// The span for one incoming gRPC request, a child of the caller's trace when it sent one.
pub fn request_span(request: &tonic::codegen::http::Request<()>) -> Span {
    let parent = TraceContextPropagator::new().extract(&HeaderReader(request.headers()));
    let span = tracing::info_span!("grpc.request", rpc = %request.uri().path());
    let _ = span.set_parent(parent);
    span
}

/// Event metadata carrying the current trace context, tenant and actor.
pub fn event_metadata(tenant_id: Option<&str>, actor: Option<&str>) -> Metadata {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new()
        .inject_context(&Span::current().context(), &mut MapCarrier(&mut carrier));
    Metadata {
        tenant_id: tenant_id.map(str::to_owned),
        actor: actor.map(str::to_owned),
        traceparent: carrier.remove("traceparent"),
        tracestate: carrier.remove("tracestate").filter(|s| !s.is_empty()),
        ..Metadata::default()
    }
}

/// Makes `span` a child of the trace stored in an event's metadata, so work a consumer does
/// for an event joins the trace of the request that wrote it.
pub fn continue_trace(span: &Span, metadata: &Metadata) {
    let Some(traceparent) = &metadata.traceparent else {
        return;
    };
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.clone());
    if let Some(state) = &metadata.tracestate {
        carrier.insert("tracestate".to_owned(), state.clone());
    }
    let parent = TraceContextPropagator::new().extract(&MapReader(&carrier));
    let _ = span.set_parent(parent);
}
