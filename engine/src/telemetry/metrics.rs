//! Metrics: every instrument of the engine, declared here and nowhere else, and recorded
//! through the small functions below.
//!
//! Names follow the OpenTelemetry semantic conventions: dotted, with the unit as metadata
//! (UCUM: `s`, or an annotation such as `{attempt}`). The Prometheus exporter turns them into
//! Prometheus names with the unit in the name and `_total` on counters:
//! `tributary.step.duration` (unit `s`) is scraped as `tributary_step_duration_seconds`,
//! `tributary.steps.started` as `tributary_steps_started_total`. Each instrument's
//! Prometheus name is declared next to it (`*_PROMETHEUS`) and checked by a test.
//!
//! Attributes are low-cardinality on purpose: workflow name, the step's *graph* name (a map
//! item `square[3]` counts as `square`), an outcome. Never a run id.
//!
//! Before [`super::init`] installs a meter provider (or with `OTEL_SDK_DISABLED=true`) the
//! instruments are no-ops. Nothing here knows of Redis or PostgreSQL: the stream gauges show
//! what [`record_stream_depth`] was last given by the worker's maintenance loop.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};

use super::attributes as attr;

/// The instrumentation scope of every instrument.
pub const METER: &str = "tributary";

/// Step attempts started (counter). Attributes: `workflow.name`, `workflow.step.name`.
pub const STEPS_STARTED: &str = "tributary.steps.started";
/// [`STEPS_STARTED`] as Prometheus shows it.
pub const STEPS_STARTED_PROMETHEUS: &str = "tributary_steps_started_total";

/// Step attempts finished (counter), by outcome ([`Outcome`]). Attributes: `workflow.name`,
/// `workflow.step.name`, `workflow.step.outcome`.
pub const STEPS_FINISHED: &str = "tributary.steps.finished";
/// [`STEPS_FINISHED`] as Prometheus shows it.
pub const STEPS_FINISHED_PROMETHEUS: &str = "tributary_steps_finished_total";

/// Duration of a step attempt, from its start to its recorded outcome (the step function and
/// the checkpoint commit), in seconds (histogram). Attributes as [`STEPS_FINISHED`].
pub const STEP_DURATION: &str = "tributary.step.duration";
/// [`STEP_DURATION`] as Prometheus shows it (`_bucket`, `_sum`, `_count`).
pub const STEP_DURATION_PROMETHEUS: &str = "tributary_step_duration_seconds";

/// Entries in a stream (gauge, polled). Attribute: `messaging.destination.name`.
pub const STREAM_LENGTH: &str = "tributary.stream.length";
/// [`STREAM_LENGTH`] as Prometheus shows it.
pub const STREAM_LENGTH_PROMETHEUS: &str = "tributary_stream_length";

/// Entries delivered to a consumer and not yet acknowledged (gauge, polled). Attribute:
/// `messaging.destination.name`.
pub const STREAM_PENDING: &str = "tributary.stream.pending";
/// [`STREAM_PENDING`] as Prometheus shows it.
pub const STREAM_PENDING_PROMETHEUS: &str = "tributary_stream_pending";

/// Entries reclaimed from a consumer that stopped renewing its lease (counter).
pub const ENTRIES_RECLAIMED: &str = "tributary.entries.reclaimed";
/// [`ENTRIES_RECLAIMED`] as Prometheus shows it.
pub const ENTRIES_RECLAIMED_PROMETHEUS: &str = "tributary_entries_reclaimed_total";

/// Entries written to the dead-letter stream (counter). Attribute: `error.type`
/// ([`DeadLetter`]).
pub const DEAD_LETTERS: &str = "tributary.dead_letters";
/// [`DEAD_LETTERS`] as Prometheus shows it.
pub const DEAD_LETTERS_PROMETHEUS: &str = "tributary_dead_letters_total";

/// Schedule ticks handled by this process's scheduler (counter). Attributes:
/// `workflow.schedule.name`, `workflow.schedule.tick.outcome` ([`TickOutcome`]).
pub const SCHEDULER_TICKS: &str = "tributary.scheduler.ticks";
/// [`SCHEDULER_TICKS`] as Prometheus shows it.
pub const SCHEDULER_TICKS_PROMETHEUS: &str = "tributary_scheduler_ticks_total";

/// Calls that waited for an external API's rate limit (counter). Attribute:
/// `workflow.api.name`.
pub const RATE_LIMIT_WAITS: &str = "tributary.rate_limit.waits";
/// [`RATE_LIMIT_WAITS`] as Prometheus shows it.
pub const RATE_LIMIT_WAITS_PROMETHEUS: &str = "tributary_rate_limit_waits_total";

/// Time spent waiting for an external API's rate limit, in seconds (counter). Attribute:
/// `workflow.api.name`.
pub const RATE_LIMIT_WAITED: &str = "tributary.rate_limit.waited";
/// [`RATE_LIMIT_WAITED`] as Prometheus shows it.
pub const RATE_LIMIT_WAITED_PROMETHEUS: &str = "tributary_rate_limit_waited_seconds_total";

/// The stream an observation is about (OpenTelemetry messaging conventions).
pub const STREAM: &str = "messaging.destination.name";
/// The kind of a dead letter (OpenTelemetry's `error.type`).
pub const ERROR_TYPE: &str = "error.type";
/// A schedule's name.
pub const SCHEDULE: &str = "workflow.schedule.name";
/// What happened to a schedule tick.
pub const TICK_OUTCOME: &str = "workflow.schedule.tick.outcome";
/// The external API a rate limit guards.
pub const API: &str = "workflow.api.name";

/// Bucket bounds of [`STEP_DURATION`], in seconds: from API calls of a few milliseconds to
/// hour-long batch steps.
const DURATION_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
    3600.0,
];

/// How a step attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The checkpoint committed.
    Succeeded,
    /// The attempt failed and the step will be tried again.
    Retried,
    /// The attempt failed and the step (and its run) failed for good.
    Failed,
    /// The result was discarded: a newer attempt owns the step, or the run was cancelled.
    Fenced,
    /// Stopped by shutdown past its grace; the entry was handed back.
    Interrupted,
    /// PostgreSQL stayed unavailable; the entry stays pending and will be reclaimed.
    Unrecorded,
}

impl Outcome {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::Fenced => "fenced",
            Self::Interrupted => "interrupted",
            Self::Unrecorded => "unrecorded",
        }
    }
}

/// Why an entry went to the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetter {
    /// The entry's fields do not decode.
    Malformed,
    /// It names a workflow this process does not have.
    UnknownWorkflow,
    /// It names a step its workflow does not have.
    UnknownStep,
    /// It names a run PostgreSQL does not have.
    UnknownRun,
    /// Its run belongs to another workflow.
    WrongWorkflow,
    /// Its step has no row in a state to run.
    NotReady,
    /// Its step failed for good.
    StepFailed,
}

impl DeadLetter {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownWorkflow => "unknown_workflow",
            Self::UnknownStep => "unknown_step",
            Self::UnknownRun => "unknown_run",
            Self::WrongWorkflow => "wrong_workflow",
            Self::NotReady => "not_ready",
            Self::StepFailed => "step_failed",
        }
    }
}

/// What a scheduler did with a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TickOutcome {
    /// This process started the tick's run.
    Started,
    /// Another process had already started it (the idempotency key matched).
    Duplicate,
    /// Missed beyond the schedule's catch-up limit, not fired.
    Skipped,
    /// Firing failed; it is tried again.
    Failed,
}

impl TickOutcome {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Duplicate => "duplicate",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

struct Instruments {
    steps_started: Counter<u64>,
    steps_finished: Counter<u64>,
    step_duration: Histogram<f64>,
    entries_reclaimed: Counter<u64>,
    dead_letters: Counter<u64>,
    scheduler_ticks: Counter<u64>,
    rate_limit_waits: Counter<u64>,
    rate_limit_waited: Counter<f64>,
    // Registered with the provider by their callbacks; kept so they live as long as it.
    _stream_length: ObservableGauge<u64>,
    _stream_pending: ObservableGauge<u64>,
}

/// The last polled depth of each stream: stream → (length, pending).
static DEPTHS: Mutex<BTreeMap<String, (u64, Option<u64>)>> = Mutex::new(BTreeMap::new());

fn depths() -> std::sync::MutexGuard<'static, BTreeMap<String, (u64, Option<u64>)>> {
    DEPTHS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Instruments {
    fn new(meter: &Meter) -> Self {
        Self {
            steps_started: meter
                .u64_counter(STEPS_STARTED)
                .with_description("Step attempts started.")
                .with_unit("{attempt}")
                .build(),
            steps_finished: meter
                .u64_counter(STEPS_FINISHED)
                .with_description("Step attempts finished, by outcome.")
                .with_unit("{attempt}")
                .build(),
            step_duration: meter
                .f64_histogram(STEP_DURATION)
                .with_description("Duration of step attempts, from start to recorded outcome.")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            entries_reclaimed: meter
                .u64_counter(ENTRIES_RECLAIMED)
                .with_description("Stream entries reclaimed from consumers whose lease expired.")
                .with_unit("{entry}")
                .build(),
            dead_letters: meter
                .u64_counter(DEAD_LETTERS)
                .with_description("Entries written to the dead-letter stream, by reason.")
                .with_unit("{entry}")
                .build(),
            scheduler_ticks: meter
                .u64_counter(SCHEDULER_TICKS)
                .with_description("Schedule ticks handled by this process, by outcome.")
                .with_unit("{tick}")
                .build(),
            rate_limit_waits: meter
                .u64_counter(RATE_LIMIT_WAITS)
                .with_description("Calls to an external API that waited for its rate limit.")
                .with_unit("{wait}")
                .build(),
            rate_limit_waited: meter
                .f64_counter(RATE_LIMIT_WAITED)
                .with_description("Time spent waiting for external APIs' rate limits.")
                .with_unit("s")
                .build(),
            _stream_length: meter
                .u64_observable_gauge(STREAM_LENGTH)
                .with_description("Entries in the stream, as last polled.")
                .with_unit("{entry}")
                .with_callback(|observer| {
                    for (stream, (length, _)) in depths().iter() {
                        observer.observe(*length, &[KeyValue::new(STREAM, stream.clone())]);
                    }
                })
                .build(),
            _stream_pending: meter
                .u64_observable_gauge(STREAM_PENDING)
                .with_description(
                    "Entries delivered to a consumer and not yet acknowledged, as last polled.",
                )
                .with_unit("{entry}")
                .with_callback(|observer| {
                    for (stream, (_, pending)) in depths().iter() {
                        if let Some(pending) = pending {
                            observer.observe(*pending, &[KeyValue::new(STREAM, stream.clone())]);
                        }
                    }
                })
                .build(),
        }
    }
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

/// The instruments, created on first use from the global meter provider (so after
/// [`super::init`] has installed it).
fn instruments() -> &'static Instruments {
    INSTRUMENTS.get_or_init(|| Instruments::new(&opentelemetry::global::meter(METER)))
}

/// Whether a meter provider records anything (set by [`super::init`]). Polls that exist
/// only to feed gauges are skipped when it does not.
pub fn enabled() -> bool {
    super::metrics_enabled()
}

fn step_attributes(workflow: &str, step: &str) -> [KeyValue; 2] {
    [
        KeyValue::new(attr::WORKFLOW_NAME, workflow.to_owned()),
        KeyValue::new(attr::STEP, step.to_owned()),
    ]
}

/// Records the start of a step attempt. `step` is the graph step's name (`square`, not
/// `square[3]`).
pub fn step_started(workflow: &str, step: &str) {
    instruments()
        .steps_started
        .add(1, &step_attributes(workflow, step));
}

/// Records the end of a step attempt: its outcome and how long it took.
pub fn step_finished(workflow: &str, step: &str, outcome: Outcome, duration: Duration) {
    let [w, s] = step_attributes(workflow, step);
    let attributes = [w, s, KeyValue::new(attr::OUTCOME, outcome.as_str())];
    let i = instruments();
    i.steps_finished.add(1, &attributes);
    i.step_duration.record(duration.as_secs_f64(), &attributes);
}

/// Records `n` entries reclaimed from consumers whose lease expired.
pub fn entries_reclaimed(n: u64) {
    if n > 0 {
        instruments().entries_reclaimed.add(n, &[]);
    }
}

/// Records an entry written to the dead-letter stream.
pub fn dead_lettered(reason: DeadLetter) {
    instruments()
        .dead_letters
        .add(1, &[KeyValue::new(ERROR_TYPE, reason.as_str())]);
}

/// Records `n` ticks of `schedule` with the same outcome.
pub fn scheduler_ticks(schedule: &str, outcome: TickOutcome, n: u64) {
    if n > 0 {
        instruments().scheduler_ticks.add(
            n,
            &[
                KeyValue::new(SCHEDULE, schedule.to_owned()),
                KeyValue::new(TICK_OUTCOME, outcome.as_str()),
            ],
        );
    }
}

/// Records one tick of `schedule`.
pub fn scheduler_tick(schedule: &str, outcome: TickOutcome) {
    scheduler_ticks(schedule, outcome, 1);
}

/// Records that a call to the external API `api` waited `waited` for its rate limit. A zero
/// wait records nothing, so callers may call it after every acquisition.
///
/// ```
/// tributary::telemetry::metrics::rate_limit_wait("gdelt", std::time::Duration::from_millis(250));
/// ```
pub fn rate_limit_wait(api: &str, waited: Duration) {
    if waited.is_zero() {
        return;
    }
    let attributes = [KeyValue::new(API, api.to_owned())];
    let i = instruments();
    i.rate_limit_waits.add(1, &attributes);
    i.rate_limit_waited.add(waited.as_secs_f64(), &attributes);
}

/// Sets what the stream gauges report for `stream` until the next poll: its length and, for a
/// stream read by a consumer group, its pending count.
pub fn record_stream_depth(stream: &str, length: u64, pending: Option<u64>) {
    // Created here so the gauges exist (and their callbacks are registered) once polled.
    let _ = instruments();
    depths().insert(stream.to_owned(), (length, pending));
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    use super::*;

    #[test]
    fn every_instrument_is_scraped_under_its_declared_prometheus_name() {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let i = Instruments::new(&provider.meter(METER));
        let step = step_attributes("wf", "s");
        i.steps_started.add(1, &step);
        i.steps_finished.add(1, &step);
        i.step_duration.record(0.5, &step);
        i.entries_reclaimed.add(1, &[]);
        i.dead_letters.add(1, &[]);
        i.scheduler_ticks.add(1, &[]);
        i.rate_limit_waits.add(1, &[]);
        i.rate_limit_waited.add(0.25, &[]);
        depths().insert("t:steps".into(), (3, Some(1)));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        for name in [
            STEPS_STARTED_PROMETHEUS,
            STEPS_FINISHED_PROMETHEUS,
            STEP_DURATION_PROMETHEUS,
            STREAM_LENGTH_PROMETHEUS,
            STREAM_PENDING_PROMETHEUS,
            ENTRIES_RECLAIMED_PROMETHEUS,
            DEAD_LETTERS_PROMETHEUS,
            SCHEDULER_TICKS_PROMETHEUS,
            RATE_LIMIT_WAITS_PROMETHEUS,
            RATE_LIMIT_WAITED_PROMETHEUS,
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert!(
            text.contains("tributary_step_duration_seconds_count{workflow_name=\"wf\",workflow_step_name=\"s\"} 1"),
            "{text}"
        );
    }
}
