//! The per-API rate limit holds across worker processes: two `tributary worker` processes
//! fetching FRED series together stay under one quota, because the limit is shared through
//! Redis.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tributary::runtime::StartOptions;
use tributary::testing::TestEnv;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// Answers every observations request with one observation, and notes when it came.
#[derive(Clone, Default)]
struct Recorder {
    at: Arc<Mutex<Vec<Instant>>>,
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.at.lock().unwrap().push(Instant::now());
        let series = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "series_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        ResponseTemplate::new(200).set_body_json(json!({
            "realtime_start": "2025-03-04", "realtime_end": "2025-03-04",
            "observation_start": "2025-03-03", "observation_end": "9999-12-31",
            "units": "lin", "output_type": 1, "file_type": "json",
            "order_by": "observation_date", "sort_order": "asc",
            "count": 1, "offset": 0, "limit": 100000,
            "observations": [{
                "realtime_start": "2025-03-04", "realtime_end": "2025-03-04",
                "date": "2025-03-03", "value": if series.ends_with('7') { "-1.5" } else { "68.2" }
            }]
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_together_stay_within_one_apis_rate_limit() {
    let env = TestEnv::start().await;
    let mock = MockServer::start().await;
    let recorder = Recorder::default();
    Mock::given(method("GET"))
        .and(path("/fred/series/observations"))
        .respond_with(recorder.clone())
        .mount(&mock)
        .await;
    let series: Vec<String> = (0..16).map(|i| format!("S{i:02}")).collect();
    let base_url = format!("{}/fred", mock.uri());
    let series_env = serde_json::to_string(&series).unwrap();
    let extra = [
        ("TRIBUTARY_SOURCES_FRED_BASE_URL", base_url.as_str()),
        ("TRIBUTARY_SOURCES_FRED_SERIES", series_env.as_str()),
        // 4 a second, evenly spaced: each process alone would happily do 4 a second, so two
        // unshared limiters would reach 8.
        ("TRIBUTARY_SOURCES_FRED_RATE_LIMIT", "4/s"),
        (
            "TRIBUTARY_SECRET_FRED_API_KEY",
            "0123456789abcdef0123456789abcdef",
        ),
        // Two steps at a time each, so that both processes keep taking fetches.
        ("TRIBUTARY_WORKER_CONCURRENCY", "2"),
        ("RUST_LOG", "info"),
    ];
    let mut workers = [
        env.spawn_worker(BIN.as_ref(), &extra),
        env.spawn_worker(BIN.as_ref(), &extra),
    ];
    for w in &workers {
        assert!(
            w.wait_for_log("worker started", Duration::from_secs(30))
                .await,
            "{:#?}",
            w.logs()
        );
    }
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;
    let run = engine
        .start(
            "fred",
            json!({"start": "2025-03-01T00:00:00Z", "end": "2025-03-04T00:00:00Z"}),
            StartOptions::default(),
        )
        .await
        .unwrap();
    let view = engine.wait(run, Duration::from_secs(90)).await.unwrap();
    assert_eq!(view.status, "succeeded", "{:#?}", view.steps);

    // Both processes fetched series.
    let fetchers: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT detail FROM tributary_events
         WHERE run_id = $1 AND kind = 'step_completed' AND step LIKE 'fetch[%'",
    )
    .bind(run.0)
    .fetch_all(engine.store().pool())
    .await
    .unwrap();
    assert_eq!(
        fetchers.len(),
        2,
        "one process did all the work: {fetchers:?}"
    );

    // No one-second window saw more than the quota (plus one for a window's edge).
    let mut at = recorder.at.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), series.len());
    let most_in_a_second = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| t.duration_since(at[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_in_a_second <= 5,
        "{most_in_a_second} requests within one second under a 4/s limit"
    );
    for w in &mut workers {
        w.kill().await;
    }
}
