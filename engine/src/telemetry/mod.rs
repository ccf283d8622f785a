//! OpenTelemetry: one trace per run, one span per step attempt, and the engine's metrics,
//! exported over OTLP (and metrics also scraped by Prometheus).
//!
//! [`init`] installs the `tracing` subscriber (logs to stderr, with the trace and span ids of
//! the current span) and, when an OTLP endpoint is configured, the OpenTelemetry layer with a
//! batch exporter. Everything is configured by the standard variables:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`, the default), `OTEL_SERVICE_NAME`
//! (default `tributary`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` / `_ARG`,
//! `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER=none`.
//!
//! The trace context travels inside each stream entry ([`propagation`]), so a step run by
//! another process, or retried hours later, joins its run's trace. Attribute keys live in
//! [`attributes`]. Nothing here knows of Redis or PostgreSQL.
//!
//! Metrics ([`metrics`]) go to a meter provider with two readers: a Prometheus reader, scraped
//! through the `/metrics` endpoint ([`endpoint`]), and, when an OTLP endpoint is set, a
//! periodic OTLP exporter (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_METRICS_EXPORTER=otlp|none`).

pub mod attributes;
pub mod endpoint;
pub mod metrics;
pub mod propagation;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A telemetry set-up problem. The engine still runs, without export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OTLP exporter could not be built from the configuration.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// The Prometheus exporter could not be built.
    #[error("cannot build the Prometheus exporter: {0}")]
    Prometheus(String),
}

/// Flushes and stops the exporter when shut down (or dropped).
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Whether metrics are recorded (for `/metrics`, and for OTLP when configured).
    pub fn metering(&self) -> bool {
        self.meter_provider.is_some()
    }

    /// Exports what is queued and stops the exporter. Blocking: call it from a thread that may
    /// block (e.g. `spawn_blocking`), never from a current-thread runtime's thread.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing spans at shutdown failed: {e}");
        }
        if let Some(provider) = self.meter_provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing metrics at shutdown failed: {e}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether `OTEL_SDK_DISABLED=true` turns OpenTelemetry off (spans and metrics).
fn sdk_disabled() -> bool {
    env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether the standard variables ask for OTLP export.
pub fn export_configured() -> bool {
    let disabled = sdk_disabled();
    let none = env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    endpoint && !disabled && !none
}

/// Builds the tracer provider from the standard variables, or `None` when export is off.
///
/// # Errors
/// [`Error::Exporter`] when the exporter cannot be built (e.g. an unknown protocol).
pub fn tracer_provider() -> Result<Option<SdkTracerProvider>, Error> {
    if !export_configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .build()
        .map_err(|e| Error::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    Ok(Some(provider))
}

/// `service.name` (default `tributary`) and `OTEL_RESOURCE_ATTRIBUTES`.
fn resource() -> Resource {
    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("tributary");
    }
    resource.build()
}

/// Whether the standard variables ask for metrics to be pushed over OTLP: an endpoint
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`), and
/// `OTEL_METRICS_EXPORTER` unset or listing `otlp` (`none` or `prometheus` alone turn the push
/// off; the `/metrics` endpoint is configured separately).
pub fn metrics_export_configured() -> bool {
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some();
    let otlp = env("OTEL_METRICS_EXPORTER")
        .is_none_or(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case("otlp")));
    endpoint && otlp && !sdk_disabled()
}

/// Set once a meter provider is installed.
static METRICS_ON: AtomicBool = AtomicBool::new(false);
/// The registry the Prometheus reader fills, rendered by the `/metrics` endpoint.
static PROMETHEUS: OnceLock<prometheus::Registry> = OnceLock::new();

pub(crate) fn metrics_enabled() -> bool {
    METRICS_ON.load(Ordering::Relaxed)
}

pub(crate) fn prometheus_registry() -> Option<&'static prometheus::Registry> {
    PROMETHEUS.get()
}

/// Builds the meter provider: a Prometheus reader filling `registry` and, when configured
/// ([`metrics_export_configured`]), a periodic OTLP exporter. `None` with
/// `OTEL_SDK_DISABLED=true`.
///
/// # Errors
/// [`Error::Exporter`] or [`Error::Prometheus`] when an exporter cannot be built.
pub fn meter_provider(registry: &prometheus::Registry) -> Result<Option<SdkMeterProvider>, Error> {
    if sdk_disabled() {
        return Ok(None);
    }
    let prometheus = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        // Labels of every series would otherwise repeat the meter's name and version.
        .scope_info_enabled(false)
        .build()
        .map_err(|e| Error::Prometheus(e.to_string()))?;
    let mut builder = SdkMeterProvider::builder()
        .with_reader(prometheus)
        .with_resource(resource());
    if metrics_export_configured() {
        // The exporter reads OTEL_EXPORTER_OTLP_[METRICS_]{ENDPOINT,PROTOCOL}; the reader
        // OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .build()
            .map_err(|e| Error::Exporter(e.to_string()))?;
        builder = builder.with_reader(PeriodicReader::builder(exporter).build());
    }
    Ok(Some(builder.build()))
}

/// Installs logging and, when configured, span export. Call once, inside a Tokio runtime
/// (the gRPC exporter needs one).
pub fn init() -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,fred=warn,opentelemetry=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // RUST_LOG filters the logs only: exported spans do not depend on the log level.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .event_format(WithTraceIds(tracing_subscriber::fmt::format()))
        .with_filter(filter);
    let (provider, problem) = match tracer_provider() {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("tributary"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(e) = problem {
        tracing::warn!(error = %e, "span export is off");
    }
    let registry = PROMETHEUS.get_or_init(prometheus::Registry::new);
    let meter_provider = match meter_provider(registry) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "metrics are off");
            None
        }
    };
    if let Some(p) = &meter_provider {
        opentelemetry::global::set_meter_provider(p.clone());
        METRICS_ON.store(true, Ordering::Relaxed);
    }
    TelemetryGuard {
        provider,
        meter_provider,
    }
}

/// Prefixes each log line written inside a traced span with `trace_id=… span_id=…`, so that a
/// log line leads to its trace.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt;
        let id = event
            .parent()
            .cloned()
            .or_else(|| ctx.lookup_current().map(|s| s.id()));
        let cx = id.and_then(|id| {
            tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(&id, d))
        });
        if let Some(cx) = cx {
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                write!(
                    writer,
                    "trace_id={} span_id={} ",
                    sc.trace_id(),
                    sc.span_id()
                )?;
            }
        }
        self.0.format_event(ctx, writer, event)
    }
}
