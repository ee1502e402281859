//! Logging and tracing for the Argent binaries.
//!
//! Logs go to stderr through `tracing-subscriber` (`ARGENT_LOG` or `RUST_LOG`, default
//! `info`); the recent lines are also kept in memory ([`recent_logs`], for `logs.tail`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP/gRPC
//! and the W3C trace-context propagator is installed, so a trace follows a request from the
//! gateway through gRPC to the node-agent and through NATS to the events.

#![forbid(unsafe_code)]

mod recent;

pub use recent::{recent_logs, RecentLogs, Tail};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes exported spans when dropped (at the end of `main`).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("opentelemetry shutdown: {err}");
            }
        }
    }
}

/// Installs the global subscriber. Call once, inside the tokio runtime.
pub fn init(service_name: &'static str) -> anyhow::Result<TelemetryGuard> {
    let filter = std::env::var("ARGENT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(EnvFilter::new(&filter));
    // The same lines, without colours, kept in memory for `logs.tail`.
    let ring = tracing_subscriber::fmt::layer()
        .with_writer(recent::RingWriter)
        .with_target(false)
        .with_ansi(false)
        .with_filter(EnvFilter::new(&filter));

    let otlp_endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty());
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry()
            .with(fmt)
            .with(ring)
            .try_init()?;
        return Ok(TelemetryGuard { provider: None });
    };

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(service_name);
    opentelemetry::global::set_tracer_provider(provider.clone());
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(fmt)
        .with(ring)
        .with(otel)
        .try_init()?;
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}
