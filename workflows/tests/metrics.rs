//! Metrics: a worker process's `/metrics` endpoint counts step attempts by outcome, and the
//! same instruments reach an OTLP receiver started by the test.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint};
use serde_json::json;
use support::WAIT;
use support::otlp::MetricsReceiver;
use tributary::runtime::{Engine, StartOptions};
use tributary::telemetry::attributes as attr;
use tributary::telemetry::metrics as m;
use tributary::testing::{TestEnv, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// One sample of a Prometheus text exposition: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// The samples of a Prometheus text exposition.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of the series `name` whose labels include `labels` (0 when there is none).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Prometheus label names: the attribute keys with dots as underscores.
fn label(key: &str) -> String {
    key.replace('.', "_")
}

async fn scrape(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

async fn start(engine: &Engine, workflow: &str, input: serde_json::Value) -> String {
    let run = engine
        .start(workflow, input, StartOptions::default())
        .await
        .unwrap();
    engine.wait(run, WAIT).await.unwrap().status
}

/// One worker process serving `/metrics` on a free port, plus extra environment.
fn worker_with_metrics(
    env: &TestEnv,
    extra: &[(&str, &str)],
) -> (tributary::testing::WorkerProcess, u16) {
    let port = tributary::services::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut vars = vec![("TRIBUTARY_METRICS_LISTEN", listen.as_str())];
    vars.extend_from_slice(extra);
    (env.spawn_worker(BIN.as_ref(), &vars), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_step_attempts_by_outcome() {
    let env = TestEnv::start().await;
    let (_worker, port) = worker_with_metrics(&env, &[]);
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;

    // 3 items, each failing once: 6 attempts of `square`, 3 retried.
    let ok = start(&engine, "demo", json!({"n": 3, "fail_times": 1})).await;
    assert_eq!(ok, "succeeded");
    // The report fails fatally: the run fails, its on_failure hook runs.
    let failed = start(&engine, "demo", json!({"n": 2, "fail_report": true})).await;
    assert_eq!(failed, "failed");

    let (w, s, o) = (
        label(attr::WORKFLOW_NAME),
        label(attr::STEP),
        label(attr::OUTCOME),
    );
    let finished = |text: &str, step: &str, outcome: &str| {
        value(
            text,
            m::STEPS_FINISHED_PROMETHEUS,
            &[(&w, "demo"), (&s, step), (&o, outcome)],
        )
    };
    let started = |text: &str, step: &str| {
        value(
            text,
            m::STEPS_STARTED_PROMETHEUS,
            &[(&w, "demo"), (&s, step)],
        )
    };
    // The hook's attempt is recorded just after the run is seen failed.
    let last = Mutex::new(String::new());
    let settled = eventually(WAIT, || async {
        let text = scrape(port, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        let done = finished(&text, "on_failure", "succeeded") == 1.0;
        *last.lock().unwrap() = text;
        done
    })
    .await;
    let text = last.into_inner().unwrap();
    assert!(settled, "/metrics said:\n{text}");

    assert_eq!(started(&text, "numbers"), 2.0, "{text}");
    assert_eq!(finished(&text, "numbers", "succeeded"), 2.0, "{text}");
    // Map items count under the map's name, not `square[i]`.
    assert_eq!(started(&text, "square"), 8.0, "{text}");
    assert_eq!(finished(&text, "square", "retried"), 3.0, "{text}");
    assert_eq!(finished(&text, "square", "succeeded"), 5.0, "{text}");
    assert_eq!(started(&text, "report"), 2.0, "{text}");
    assert_eq!(finished(&text, "report", "succeeded"), 1.0, "{text}");
    assert_eq!(finished(&text, "report", "failed"), 1.0, "{text}");
    assert!(!text.contains("square["), "no per-item series: {text}");
    assert!(!text.contains("workflow_run_id"), "no run ids: {text}");

    let histogram_count = format!("{}_count", m::STEP_DURATION_PROMETHEUS);
    assert_eq!(
        value(&text, &histogram_count, &[(&w, "demo"), (&s, "square")]),
        8.0,
        "{text}"
    );
    assert!(
        text.contains(&format!("# TYPE {} histogram", m::STEP_DURATION_PROMETHEUS)),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            m::DEAD_LETTERS_PROMETHEUS,
            &[(&label(m::ERROR_TYPE), "step_failed")]
        ),
        1.0,
        "{text}"
    );
    // The stream gauges of the step stream, polled by the worker.
    let stream = [(label(m::STREAM), "tributary:steps".to_owned())];
    let stream: Vec<(&str, &str)> = stream
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(
        samples(&text)
            .iter()
            .any(|(n, l, _)| n == m::STREAM_LENGTH_PROMETHEUS
                && l.iter().any(|(k, v)| (k.as_str(), v.as_str()) == stream[0])),
        "{text}"
    );
    assert!(
        samples(&text)
            .iter()
            .any(|(n, l, _)| n == m::STREAM_PENDING_PROMETHEUS
                && l.iter().any(|(k, v)| (k.as_str(), v.as_str()) == stream[0])),
        "{text}"
    );
    assert!(
        text.contains("target_info{") && text.contains("service_name=\"tributary\""),
        "{text}"
    );
    // The dead-letter stream's length: the failed report step's entry (polled every 5 s).
    let dead_label = label(m::STREAM);
    let dead_letters_listed = eventually(Duration::from_secs(20), || async {
        let Some((_, text)) = scrape(port, "/metrics").await else {
            return false;
        };
        value(
            &text,
            m::STREAM_LENGTH_PROMETHEUS,
            &[(&dead_label, "tributary:dead")],
        ) == 1.0
    })
    .await;
    assert!(
        dead_letters_listed,
        "the dead-letter stream's length gauge never showed 1"
    );

    let health = scrape(port, "/healthz").await;
    assert_eq!(health.map(|h| h.0), Some(200));
}

fn has(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes.iter().any(|a| {
        a.key == key
            && matches!(a.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(Value::StringValue(s)) if s == value)
    })
}

/// The cumulative value of a counter's data point for `chain3`'s step `step`.
fn counter(metric: &Metric, step: &str) -> Option<i64> {
    let Some(Data::Sum(sum)) = &metric.data else {
        return None;
    };
    sum.data_points
        .iter()
        .find(|p: &&NumberDataPoint| {
            has(&p.attributes, attr::WORKFLOW_NAME, "chain3")
                && has(&p.attributes, attr::STEP, step)
        })
        .and_then(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => Some(i),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_metrics_reach_an_otlp_receiver_with_their_attributes() {
    let env = TestEnv::start().await;
    let (receiver, port) = MetricsReceiver::start().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let _worker = env.spawn_worker(
        BIN.as_ref(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            // Spans off: this test is about metrics alone.
            ("OTEL_TRACES_EXPORTER", "none"),
        ],
    );
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;
    assert_eq!(start(&engine, "chain3", json!(1)).await, "succeeded");

    let arrived = eventually(WAIT, || async {
        let finished = receiver.latest(m::STEPS_FINISHED);
        // Each step's outcome is recorded after its checkpoint's publish: `c` can finish
        // (and be exported) before `b`'s outcome is recorded. Wait for all three.
        finished.is_some_and(|f| ["a", "b", "c"].iter().all(|s| counter(&f, s) == Some(1)))
    })
    .await;
    assert!(arrived, "metrics received: {:?}", receiver.names());
    let started = receiver.latest(m::STEPS_STARTED).unwrap();
    for step in ["a", "b", "c"] {
        assert_eq!(counter(&started, step), Some(1), "{started:?}");
    }
    let Some(Data::Sum(sum)) = &started.data else {
        panic!("{started:?}")
    };
    assert!(sum.is_monotonic, "a counter");

    let finished = receiver.latest(m::STEPS_FINISHED).unwrap();
    let Some(Data::Sum(sum)) = &finished.data else {
        panic!("{finished:?}")
    };
    assert!(
        sum.data_points
            .iter()
            .all(|p| has(&p.attributes, attr::OUTCOME, "succeeded")),
        "{finished:?}"
    );

    let duration = receiver.latest(m::STEP_DURATION).unwrap();
    assert_eq!(duration.unit, "s");
    let Some(Data::Histogram(histogram)) = &duration.data else {
        panic!("{duration:?}")
    };
    let points: u64 = histogram
        .data_points
        .iter()
        .filter(|p| has(&p.attributes, attr::WORKFLOW_NAME, "chain3"))
        .map(|p| p.count)
        .sum();
    assert_eq!(points, 3, "{duration:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_metrics_collector_reachable_runs_complete_and_metrics_are_still_served() {
    let env = TestEnv::start().await;
    let closed = format!(
        "http://127.0.0.1:{}",
        tributary::services::free_port().unwrap()
    );
    let (_worker, port) = worker_with_metrics(
        &env,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &closed),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ],
    );
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;
    let run = engine
        .start("chain3", json!(1), StartOptions::default())
        .await
        .unwrap();
    assert_eq!(engine.wait(run, WAIT).await.unwrap().status, "succeeded");
    let w = label(attr::WORKFLOW_NAME);
    let last = std::sync::Mutex::new(String::new());
    let counted = eventually(WAIT, || async {
        let text = scrape(port, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_else(|| "scrape failed".to_owned());
        let started = value(&text, m::STEPS_STARTED_PROMETHEUS, &[(&w, "chain3")]);
        *last.lock().unwrap() = text;
        started == 3.0
    })
    .await;
    let events = engine.status(run).await.unwrap().events;
    let text = last.lock().unwrap().clone();
    let steps: Vec<&str> = text.lines().filter(|l| l.contains("chain3")).collect();
    assert!(
        counted,
        "last scrape (chain3 lines):\n{}\nevents: {events:?}",
        steps.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_in_use_stops_the_worker_with_a_message_naming_it() {
    let env = TestEnv::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut worker = env.spawn_worker(BIN.as_ref(), &[("TRIBUTARY_METRICS_LISTEN", &addr)]);
    let status = worker.wait(WAIT).await.expect("the worker exits");
    assert!(!status.success());
    // The exit can be seen before the stderr reader has taken the last lines: wait for them.
    let message = format!("cannot serve /metrics on {addr}");
    assert!(
        worker.wait_for_log(&message, WAIT).await,
        "{}",
        worker.logs().join("\n")
    );
}
