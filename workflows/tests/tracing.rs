//! Traces: a multi-step run executed by two worker processes is one trace, with one span per
//! step attempt, exported over OTLP to a receiver started by the test.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use support::WAIT;
use support::otlp::TraceReceiver;
use tributary::telemetry::attributes as attr;
use tributary::testing::{TestEnv, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::IntValue(i)) => Some(i.to_string()),
            Some(Value::BoolValue(b)) => Some(b.to_string()),
            Some(Value::DoubleValue(d)) => Some(d.to_string()),
            _ => None,
        })
}

/// Runs the `tributary` CLI against the test's servers with extra environment variables.
fn cli(env: &TestEnv, args: &[&str], vars: &[(&str, String)]) -> std::process::Output {
    tokio::task::block_in_place(|| {
        std::process::Command::new(BIN)
            .args(args)
            .env("REDIS_URL", env.redis.url())
            .env("DATABASE_URL", env.postgres.url())
            .envs(vars.iter().map(|(k, v)| (*k, v)))
            .output()
            .unwrap()
    })
}

fn otel_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ("OTEL_SERVICE_NAME", "tributary-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_across_two_worker_processes_is_one_trace_with_a_span_per_attempt() {
    let env = TestEnv::start().await;
    let (receiver, port) = TraceReceiver::start().await;
    let vars = otel_env(port);
    let mut extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("TRIBUTARY_WORKER_CONCURRENCY", "2"));
    extra.push(("RUST_LOG", "info"));
    let workers = [
        env.spawn_worker(BIN.as_ref(), &extra),
        env.spawn_worker(BIN.as_ref(), &extra),
    ];

    // Started from the CLI, whose call span is the run span's parent.
    let out = cli(
        &env,
        &[
            "start",
            "demo",
            "--input",
            r#"{"n": 6, "sleep_ms": 300, "fail_times": 1}"#,
            "--wait",
            "--timeout",
            "60s",
        ],
        &vars,
    );
    assert!(out.status.success(), "{out:?}");

    // numbers, sum, 6 items × 2 attempts, join, report = 16 step spans.
    let complete = eventually(WAIT, || async { receiver.has_run_with_steps(16) }).await;
    let spans = receiver.spans();
    assert!(
        complete,
        "spans received: {:?}; the CLI said: {}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );

    let run = spans.iter().find(|s| s.name == attr::RUN_SPAN).unwrap();
    assert!(
        run.parent_span_id.is_empty(),
        "a run is the root of its own trace"
    );
    assert_eq!(
        run.links.len(),
        1,
        "the run span links to the CLI call that started it"
    );
    assert_ne!(run.links[0].trace_id, run.trace_id);
    let run_id = attribute(run, attr::RUN_ID).unwrap();
    assert_eq!(attribute(run, attr::WORKFLOW_NAME).as_deref(), Some("demo"));

    let steps: Vec<&Span> = spans.iter().filter(|s| s.name == attr::STEP_SPAN).collect();
    let traces: HashSet<&Vec<u8>> = steps
        .iter()
        .map(|s| &s.trace_id)
        .chain([&run.trace_id])
        .collect();
    assert_eq!(traces.len(), 1, "one trace per run");
    for step in &steps {
        assert_eq!(
            step.parent_span_id, run.span_id,
            "every attempt is a child of the run span"
        );
        assert_eq!(
            attribute(step, attr::RUN_ID).as_deref(),
            Some(run_id.as_str())
        );
        assert_eq!(
            attribute(step, attr::WORKFLOW_NAME).as_deref(),
            Some("demo")
        );
        assert_eq!(
            attribute(step, attr::WORKFLOW_VERSION).as_deref(),
            Some("1")
        );
        assert!(attribute(step, attr::QUEUE_WAIT_MS).is_some());
    }
    // The retried item shows as two attempt spans: the first failed and retrying.
    let square0: HashMap<String, &Span> = steps
        .iter()
        .filter(|s| attribute(s, attr::STEP).as_deref() == Some("square[0]"))
        .map(|s| (attribute(s, attr::ATTEMPT).unwrap(), *s))
        .collect();
    assert_eq!(square0.len(), 2, "{square0:?}");
    let first = square0["1"];
    assert_eq!(attribute(first, attr::OUTCOME).as_deref(), Some("retrying"));
    assert_eq!(
        first.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert!(
        attribute(first, attr::ERROR_MESSAGE)
            .unwrap()
            .contains("planned failure")
    );
    assert_eq!(
        attribute(square0["2"], attr::OUTCOME).as_deref(),
        Some("succeeded")
    );
    // The checkpoint commit is visible inside each attempt.
    let checkpoints = spans
        .iter()
        .filter(|s| s.name == attr::CHECKPOINT_SPAN)
        .count();
    assert!(checkpoints >= 16, "{checkpoints} checkpoint spans");
    // Both worker processes ran steps of this run.
    let consumers: HashSet<String> = steps
        .iter()
        .filter_map(|s| attribute(s, attr::CONSUMER))
        .collect();
    assert_eq!(consumers.len(), 2, "{consumers:?}");

    // `tributary status` names the trace.
    let status = cli(&env, &["status", &run_id], &[]);
    let trace_hex: String = run.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&format!("trace     {trace_hex}")),
        "{status:?}"
    );

    // Log lines written inside an attempt lead to its trace.
    let logs: Vec<String> = workers.iter().flat_map(|w| w.logs()).collect();
    let failed = logs
        .iter()
        .find(|l| l.contains("step attempt failed"))
        .expect("the planned failures were logged");
    assert!(
        failed.starts_with(&format!("trace_id={trace_hex} span_id=")),
        "{failed}"
    );
}

/// Starts a worker and runs `chain3` to its end through the CLI, both with `vars`; the worker
/// is returned so that it lives as long as the caller needs its spans.
fn chain3_through_a_worker(
    env: &TestEnv,
    vars: &[(&str, String)],
) -> (tributary::testing::WorkerProcess, std::process::Output) {
    let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker = env.spawn_worker(BIN.as_ref(), &extra);
    let args = [
        "start",
        "chain3",
        "--input",
        "1",
        "--wait",
        "--timeout",
        "60s",
    ];
    (worker, cli(env, &args, vars))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_collector_reachable_the_engine_runs_normally() {
    let env = TestEnv::start().await;
    let closed = tributary::services::free_port().unwrap();
    let vars = otel_env(closed);
    let (_worker, out) = chain3_through_a_worker(&env, &vars);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4");
}

/// Finds `rotel-agent` (PyPI's `rotel`): `TRIBUTARY_ROTEL_AGENT`, `PATH`, or the `rotel`
/// Python package's directory.
fn rotel_agent() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("TRIBUTARY_ROTEL_AGENT") {
        return path.into();
    }
    if let Ok(out) = std::process::Command::new("sh")
        .args(["-c", "command -v rotel-agent"])
        .output()
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).trim().into();
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().into(),
        _ => panic!(
            "rotel-agent not found: install the OpenTelemetry collector with `pip install --pre rotel`, or set TRIBUTARY_ROTEL_AGENT"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_collector_over_otlp_http() {
    let env = TestEnv::start().await;
    let (receiver, receiver_port) = TraceReceiver::start().await;
    let grpc = tributary::services::free_port().unwrap();
    let http = tributary::services::free_port().unwrap();
    // The collector takes OTLP/HTTP from the engine and forwards OTLP/gRPC to our receiver.
    let mut collector = tokio::process::Command::new(rotel_agent())
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc}"),
        ])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args([
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            &format!("http://127.0.0.1:{receiver_port}"),
        ])
        .args(["--otlp-exporter-protocol", "grpc"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("rotel-agent starts");
    assert!(
        eventually(WAIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", http))
                .await
                .is_ok()
        })
        .await,
        "the collector never listened"
    );
    let vars = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{http}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let (_worker, out) = chain3_through_a_worker(&env, &vars);
    assert!(out.status.success(), "{out:?}");
    let arrived = eventually(WAIT, || async { receiver.has_run_with_steps(3) }).await;
    assert!(
        arrived,
        "spans through the collector: {:?}",
        receiver.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let services = receiver.services();
    assert!(
        services.iter().all(|s| s.contains("tributary")),
        "default service name: {services:?}"
    );
    let run = receiver
        .spans()
        .into_iter()
        .find(|s| s.name == attr::RUN_SPAN)
        .unwrap();
    assert!(
        receiver
            .spans()
            .iter()
            .filter(|s| s.name == attr::STEP_SPAN)
            .all(|s| s.trace_id == run.trace_id)
    );
    collector.kill().await.unwrap();
}

/// Every string in a span: its name, attribute values, events and their attributes.
fn span_text(span: &Span) -> String {
    let values = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        attrs
            .iter()
            .map(|a| format!("{}={:?}", a.key, a.value))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = format!("{} {}", span.name, values(&span.attributes));
    for event in &span.events {
        text.push_str(&format!(" {} {}", event.name, values(&event.attributes)));
    }
    if let Some(status) = &span.status {
        text.push_str(&format!(" {}", status.message));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_are_child_spans_and_no_secret_reaches_logs_spans_or_checkpoints() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const CANARY: &str = "canary0secret0value0must0never0leak";
    let env = TestEnv::start().await;
    let (receiver, port) = TraceReceiver::start().await;
    let mock = MockServer::start().await;
    // The first call fails with a 500 (retried inside the step), the second succeeds.
    Mock::given(method("GET"))
        .and(path("/fred/series/observations"))
        .respond_with(ResponseTemplate::new(500).set_body_string("Internal Server Error"))
        .up_to_n_times(1)
        .mount(&mock)
        .await;
    let page = serde_json::json!({
        "realtime_start": "2025-03-04", "realtime_end": "2025-03-04",
        "observation_start": "2025-03-03", "observation_end": "9999-12-31",
        "units": "lin", "output_type": 1, "file_type": "json",
        "order_by": "observation_date", "sort_order": "asc",
        "count": 1, "offset": 0, "limit": 100000,
        "observations": [{"realtime_start": "2025-03-04", "realtime_end": "2025-03-04",
                          "date": "2025-03-03", "value": "68.2"}]
    });
    Mock::given(method("GET"))
        .and(path("/fred/series/observations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&mock)
        .await;
    let mut vars = otel_env(port);
    vars.extend([
        (
            "TRIBUTARY_SOURCES_FRED_BASE_URL",
            format!("{}/fred", mock.uri()),
        ),
        ("TRIBUTARY_SOURCES_FRED_SERIES", "[\"DCOILWTICO\"]".into()),
        ("TRIBUTARY_SECRET_FRED_API_KEY", CANARY.into()),
        // Everything the engine and its libraries log, to look for the value in it.
        ("RUST_LOG", "debug".into()),
    ]);
    let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut worker = env.spawn_worker(BIN.as_ref(), &extra);
    let input = r#"{"start": "2025-03-01T00:00:00Z", "end": "2025-03-04T00:00:00Z"}"#;
    let out = cli(
        &env,
        &[
            "start",
            "fred",
            "--input",
            input,
            "--wait",
            "--timeout",
            "60s",
        ],
        &vars,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        eventually(WAIT, || async {
            receiver
                .spans()
                .iter()
                .any(|s| s.name == "http.client.request")
                && receiver.has_run_with_steps(3)
        })
        .await
    );
    worker.signal("TERM").await;
    worker.wait(Duration::from_secs(30)).await;

    // The HTTP call is a child of the step attempt that made it, in the run's trace, with the
    // URL (key masked), the final status and the number of resends.
    let spans = receiver.spans();
    let http = spans
        .iter()
        .find(|s| s.name == "http.client.request")
        .unwrap();
    let parent = spans
        .iter()
        .find(|s| s.span_id == http.parent_span_id)
        .expect("the HTTP span's parent was exported");
    assert_eq!(parent.name, attr::STEP_SPAN);
    assert_eq!(parent.trace_id, http.trace_id);
    assert!(attribute(parent, attr::STEP).unwrap().starts_with("fetch"));
    let url = attribute(http, "url.full").unwrap();
    assert!(
        url.contains("api_key=***") && url.contains("series_id=DCOILWTICO"),
        "{url}"
    );
    assert_eq!(
        attribute(http, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(http, "http.request.resend_count").as_deref(),
        Some("1")
    );

    // The canary is nowhere: not in any exported span, not in the worker's or the CLI's
    // output, not in any row the engine or the source wrote.
    for span in &spans {
        let text = span_text(span);
        assert!(
            !text.contains(CANARY),
            "span {} leaks the secret: {text}",
            span.name
        );
    }
    let logs = worker.logs().join("\n");
    assert!(
        logs.contains("http.client.request") || logs.contains("DEBUG"),
        "debug logs were captured"
    );
    assert!(!logs.contains(CANARY), "the worker's logs leak the secret");
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(CANARY));
    }
    let pool = sqlx::PgPool::connect(&env.postgres.url()).await.unwrap();
    for table in [
        "tributary_runs",
        "tributary_steps",
        "tributary_events",
        "ingest_cursors",
        "fred_observations",
    ] {
        let sql = format!("SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t");
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(
            !text.is_empty(),
            "{table} is empty: the run wrote nothing to look through"
        );
        assert!(!text.contains(CANARY), "{table} holds the secret");
    }
}
