//! The HTTP endpoint of a worker process: `GET /metrics` (the Prometheus text format, rendered
//! from the meter provider's Prometheus reader at each scrape) and `GET /healthz` (200 while
//! the process serves). Served with axum on the address of `metrics.listen`.
//!
//! Knows nothing of the engine: it renders what [`super::metrics`] recorded.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address cannot be bound (in use, not local, no permission).
    #[error(
        "cannot serve /metrics on {addr}: {source} (set metrics.listen or TRIBUTARY_METRICS_LISTEN to another address, or to `none`)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The current metrics in the Prometheus text format (version 0.0.4). Empty when no meter
/// provider is installed (`OTEL_SDK_DISABLED=true`, or [`super::init`] not called).
pub fn render() -> String {
    let Some(registry) = super::prometheus_registry() else {
        return String::new();
    };
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# encoding the metrics failed: {e}\n"))
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Binds `addr` and serves `/metrics` and `/healthz` until `shutdown` is cancelled. Returns the
/// bound address (useful with port 0) once listening.
///
/// # Errors
/// [`Error::Bind`] naming the address.
pub async fn serve(addr: SocketAddr, shutdown: CancellationToken) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz));
    tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics and /healthz");
    Ok(bound)
}
