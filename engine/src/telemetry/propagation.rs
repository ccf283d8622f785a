//! W3C trace context in and out of a compact string (`traceparent`, then `;tracestate` if
//! any), the form stored with a run and carried by each stream entry.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context of `span`, or `None` when it has none (no exporter installed).
pub fn inject(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    let parent = carrier.remove("traceparent")?;
    Some(
        match carrier.remove("tracestate").filter(|s| !s.is_empty()) {
            Some(state) => format!("{parent};{state}"),
            None => parent,
        },
    )
}

/// Makes `span` a child of the context in `encoded` (ignored when malformed).
pub fn set_parent(span: &tracing::Span, encoded: &str) {
    let (parent, state) = encoded.split_once(';').unwrap_or((encoded, ""));
    let mut carrier = HashMap::from([("traceparent".to_owned(), parent.to_owned())]);
    if !state.is_empty() {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}

/// The trace id (32 hex digits) of an encoded context.
pub fn trace_id(encoded: &str) -> Option<&str> {
    let mut parts = encoded.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32).then_some(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_trace_id_is_read_from_a_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01;vendor=x";
        assert_eq!(
            super::trace_id(tp),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(super::trace_id("garbage"), None);
    }
}
