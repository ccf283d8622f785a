-- The W3C trace context of a run's root span (`traceparent[;tracestate]`): every step entry of
-- the run carries it, so steps executed anywhere, at any time, join the run's trace.
ALTER TABLE tributary_runs ADD COLUMN trace_context text;
