//! OTLP/gRPC receivers for the telemetry tests: each listens on a free local port and keeps
//! everything it is sent, so that a test can export to it and then look.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::Router;
use tributary::telemetry::attributes as attr;

/// Serves `router` on a free local port, in the background; returns the port.
async fn serve(router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

/// An OTLP/gRPC trace receiver that keeps every span it is sent, with its `service.name`.
#[derive(Clone, Default)]
pub struct TraceReceiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl TraceReceiver {
    /// Starts a receiver; returns it and its port.
    pub async fn start() -> (Self, u16) {
        let receiver = Self::default();
        let service =
            TraceServiceServer::new(receiver.clone()).accept_compressed(CompressionEncoding::Gzip);
        let port = serve(tonic::transport::Server::builder().add_service(service)).await;
        (receiver, port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(_, s)| s.clone()).collect()
    }

    /// The `service.name` of every resource that sent spans (as the `Debug` of its value).
    pub fn services(&self) -> HashSet<String> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(service, _)| service.clone()).collect()
    }

    /// Whether a run span and at least `steps` step spans have arrived.
    pub fn has_run_with_steps(&self, steps: usize) -> bool {
        let spans = self.spans();
        spans.iter().filter(|s| s.name == attr::STEP_SPAN).count() >= steps
            && spans.iter().any(|s| s.name == attr::RUN_SPAN)
    }
}

/// An OTLP/gRPC metrics receiver that keeps every metric it is sent.
#[derive(Clone, Default)]
pub struct MetricsReceiver {
    metrics: Arc<Mutex<Vec<Metric>>>,
}

#[tonic::async_trait]
impl MetricsService for MetricsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.metrics.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                metrics.extend(scope.metrics);
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

impl MetricsReceiver {
    /// Starts a receiver; returns it and its port.
    pub async fn start() -> (Self, u16) {
        let receiver = Self::default();
        let service = MetricsServiceServer::new(receiver.clone())
            .accept_compressed(CompressionEncoding::Gzip);
        let port = serve(tonic::transport::Server::builder().add_service(service)).await;
        (receiver, port)
    }

    /// The names of every metric export received so far, in order.
    pub fn names(&self) -> Vec<String> {
        let metrics = self.metrics.lock().unwrap();
        metrics.iter().map(|m| m.name.clone()).collect()
    }

    /// The latest export of the metric `name`.
    pub fn latest(&self, name: &str) -> Option<Metric> {
        let metrics = self.metrics.lock().unwrap();
        metrics.iter().rev().find(|m| m.name == name).cloned()
    }
}
