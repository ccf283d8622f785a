//! The `fred` workflow against a mock FRED: paging, the `"."` sentinel, negative values, the
//! per-series cursor, idempotent re-runs, errors (malformed pages, throttling, 5xx, a bad key)
//! and, end to end, a cron tick that starts a run.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::{SourceFixture, WAIT, assert_failed_with};
use tributary::testing::eventually;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

/// The API key every test sends: 32 lower-case alphanumerics, like a real one, and unlike
/// anything else, so that finding it in PostgreSQL means it leaked.
const KEY: &str = "c4n4ryf4edk3y0000000000000000042";

/// Passes the API key as an operator would; every test calls it first (most through [`start`]).
fn init() {
    support::set_secret_env("TRIBUTARY_SECRET_FRED_API_KEY", KEY);
}

/// Passes the API key ([`init`]), then starts a fixture with `extra` in its settings.
async fn start(extra: &str) -> SourceFixture {
    init();
    SourceFixture::start(|uri| settings(uri, extra)).await
}

fn fixture(name: &str) -> Value {
    support::json_fixture("fred", name)
}

/// A 200 answer with the JSON fixture `name`.
fn ok(name: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(fixture(name))
}

/// Page 1 of DCOILWTICO as the whole series: its 5 observations, `"."` and all.
fn wti_page1_alone() -> Value {
    let mut page = fixture("observations_dcoilwtico_page1.json");
    page["count"] = json!(5);
    page
}

/// Answers the observations of `series` with `response`: every call when `times` is `None`,
/// else the first `times` calls only, expecting as many.
async fn answer_series(
    fx: &SourceFixture,
    series: &str,
    response: ResponseTemplate,
    times: Option<u64>,
) {
    let mock = Mock::given(path(OBS))
        .and(query_param("series_id", series))
        .respond_with(response);
    let mock = match times {
        Some(n) => mock.up_to_n_times(n).expect(n),
        None => mock,
    };
    mock.mount(&fx.mock).await;
}

/// Settings of the two-series tests: Brent first, then WTI, from 2000.
const BOTH_SETTINGS: &str = "series = [\"DCOILBRENTEU\", \"DCOILWTICO\"]\nstart = \"2000-01-01\"";

fn settings(uri: &str, extra: &str) -> String {
    format!("[sources.fred]\nbase-url = \"{uri}/fred\"\n{extra}\n")
}

const OBS: &str = "/fred/series/observations";

/// Serves the three DCOILWTICO pages (11 observations, 5 a page) for a start of 2020-04-08,
/// each page asked `times` times.
async fn mount_wti_pages(fx: &SourceFixture, times: u64) {
    for (page, offset) in [(1, "0"), (2, "5"), (3, "10")] {
        Mock::given(method("GET"))
            .and(path(OBS))
            .and(query_param("series_id", "DCOILWTICO"))
            .and(query_param("observation_start", "2020-04-08"))
            .and(query_param("file_type", "json"))
            .and(query_param("api_key", KEY))
            .and(query_param("limit", "5"))
            .and(query_param("offset", offset))
            .respond_with(ok(&format!("observations_dcoilwtico_page{page}.json")))
            .expect(times)
            .mount(&fx.mock)
            .await;
    }
}

const WTI_SETTINGS: &str = "series = [\"DCOILWTICO\"]\nstart = \"2020-04-08\"\npage-size = 5";

async fn value(fx: &SourceFixture, series: &str, date: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT value::text FROM fred_observations WHERE series_id = $1 AND date = $2::date",
    )
    .bind(series)
    .bind(date)
    .fetch_one(&fx.db)
    .await
    .expect("the row exists")
}

/// Every row's ("series/date", updated_at), to show that a re-run touched nothing.
async fn snapshot(fx: &SourceFixture) -> Vec<(String, DateTime<Utc>)> {
    fx.snapshot("fred_observations", "series_id, date").await
}

/// Runs `fred` expecting it to fail with each of `errors`, the key stored nowhere.
async fn assert_fails_without_leaking_the_key(fx: &SourceFixture, errors: &[&str]) {
    let view = fx.run("fred", json!({})).await;
    for error in errors {
        assert_failed_with(&view, error);
    }
    assert_eq!(fx.mentions(KEY).await, 0, "the key leaked into PostgreSQL");
}

#[tokio::test]
async fn fred_pages_through_every_observation_storing_dots_as_null_and_negatives_as_they_are() {
    let fx = start(WTI_SETTINGS).await;
    mount_wti_pages(&fx, 1).await;

    let view = fx.run_ok("fred", json!({})).await;
    assert_eq!(fx.count("fred_observations").await, 11);
    assert_eq!(value(&fx, "DCOILWTICO", "2020-04-10").await, None, "\".\"");
    assert_eq!(
        value(&fx, "DCOILWTICO", "2020-04-20").await.as_deref(),
        Some("-36.98")
    );
    assert_eq!(
        value(&fx, "DCOILWTICO", "2020-04-08").await.as_deref(),
        Some("23.63")
    );
    assert_eq!(
        fx.cursor("fred", "DCOILWTICO").await,
        Some(json!("2020-04-22"))
    );
    let output = view.output.expect("output");
    assert_eq!(output[0]["received"], 11, "{output}");
    assert_eq!(output[0]["inserted"], 11, "{output}");
}

#[tokio::test]
async fn fred_second_run_asks_only_for_the_days_after_the_cursor() {
    let fx = start(WTI_SETTINGS).await;
    mount_wti_pages(&fx, 1).await;
    Mock::given(method("GET"))
        .and(path(OBS))
        .and(query_param("series_id", "DCOILWTICO"))
        .and(query_param("observation_start", "2020-04-23"))
        .and(query_param("offset", "0"))
        .respond_with(ok("observations_dcoilwtico_after_cursor.json"))
        .expect(1)
        .mount(&fx.mock)
        .await;

    fx.run_ok("fred", json!({})).await;
    let before = snapshot(&fx).await;
    fx.run_ok("fred", json!({})).await;
    assert_eq!(fx.count("fred_observations").await, 13);
    assert_eq!(
        fx.cursor("fred", "DCOILWTICO").await,
        Some(json!("2020-04-24"))
    );
    let after = snapshot(&fx).await;
    assert_eq!(
        &after[..11],
        &before[..],
        "the earlier rows were not touched"
    );
    // The `.expect(1)` of each mock is verified when the mock server drops.
}

#[tokio::test]
async fn fred_rerunning_the_same_window_adds_and_changes_nothing() {
    let fx = start(WTI_SETTINGS).await;
    // A window whose start is before the cursor re-reads it: the same three pages, twice.
    mount_wti_pages(&fx, 2).await;
    let window = json!({"start": "2020-04-08T00:00:00Z", "end": "2020-04-23T00:00:00Z"});

    fx.run_ok("fred", window.clone()).await;
    let before = snapshot(&fx).await;
    let view = fx.run_ok("fred", window).await;
    assert_eq!(snapshot(&fx).await, before);
    let output = view.output.expect("output");
    assert_eq!(
        (&output[0]["inserted"], &output[0]["updated"]),
        (&json!(0), &json!(0)),
        "{output}"
    );
    let asked: Vec<String> = fx
        .mock
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.query().unwrap_or("").to_owned())
        .collect();
    assert!(
        asked
            .iter()
            .all(|q| q.contains("observation_end=2020-04-22")),
        "the window's last day is the end: {asked:?}"
    );
}

#[tokio::test]
async fn fred_empty_result_stores_nothing_and_leaves_no_cursor() {
    let fx = start("series = [\"DCOILWTICO\"]\nstart = \"2020-04-23\"").await;
    support::answer(&fx.mock, OBS, ok("observations_empty.json"), 1).await;
    fx.run_ok("fred", json!({})).await;
    assert_eq!(fx.count("fred_observations").await, 0);
    assert_eq!(fx.cursor("fred", "DCOILWTICO").await, None);
}

#[tokio::test]
async fn fred_malformed_value_is_fatal_names_the_record_and_field_and_writes_nothing() {
    let fx = start(BOTH_SETTINGS).await;
    answer_series(
        &fx,
        "DCOILBRENTEU",
        ok("observations_dcoilbrenteu.json"),
        None,
    )
    .await;
    let mut bad = wti_page1_alone();
    bad["observations"][3]["value"] = json!("n/a");
    let bad = ResponseTemplate::new(200).set_body_json(bad);
    answer_series(&fx, "DCOILWTICO", bad, None).await;

    let view = fx.run("fred", json!({})).await;
    assert_failed_with(&view, "record DCOILWTICO 2020-04-13: field value");
    assert_failed_with(&view, "\"n/a\"");
    // The good series waits for the bad one: nothing half-written.
    fx.assert_empty(&["fred_observations", "ingest_cursors"])
        .await;
}

#[tokio::test]
async fn fred_html_where_json_was_expected_is_fatal_and_quoted() {
    let fx = start("series = [\"DCOILWTICO\"]").await;
    let html = ResponseTemplate::new(200).set_body_raw(
        "<html><body><h1>FRED is down for maintenance</h1></body></html>",
        "text/html",
    );
    support::answer(&fx.mock, OBS, html, 1).await;
    let view = fx.run("fred", json!({})).await;
    assert_failed_with(&view, "FRED is down for maintenance");
    assert_eq!(fx.count("fred_observations").await, 0);
}

#[tokio::test]
async fn fred_429_with_retry_after_and_a_5xx_are_retried_then_succeed() {
    let fx = start(BOTH_SETTINGS).await;
    let throttled = ResponseTemplate::new(429)
        .insert_header("Retry-After", "1")
        .set_body_json(fixture("429.json"));
    answer_series(&fx, "DCOILBRENTEU", throttled, Some(1)).await;
    let html = include_str!("fixtures/fred/500.html");
    let error = ResponseTemplate::new(500).set_body_raw(html, "text/html");
    answer_series(&fx, "DCOILWTICO", error, Some(2)).await;
    let brent = ok("observations_dcoilbrenteu.json");
    answer_series(&fx, "DCOILBRENTEU", brent, Some(1)).await;
    let wti = ResponseTemplate::new(200).set_body_json(wti_page1_alone());
    answer_series(&fx, "DCOILWTICO", wti, Some(1)).await;

    fx.run_ok("fred", json!({})).await;
    assert_eq!(fx.count("fred_observations").await, 10);
    assert_eq!(value(&fx, "DCOILBRENTEU", "2025-01-01").await, None);
}

#[tokio::test]
async fn fred_bad_api_key_is_fatal_with_the_apis_message_and_the_key_is_stored_nowhere() {
    let fx = start("series = [\"DCOILWTICO\"]").await;
    Mock::given(path(OBS))
        .and(query_param("api_key", KEY))
        .respond_with(
            // FRED labels even its JSON errors text/xml at times.
            ResponseTemplate::new(400)
                .set_body_raw(fixture("400_bad_key.json").to_string(), "text/xml"),
        )
        .expect(1)
        .mount(&fx.mock)
        .await;
    assert_fails_without_leaking_the_key(
        &fx,
        &[
            "The value for variable api_key is not registered",
            "api_key=***",
        ],
    )
    .await;
}

#[tokio::test]
async fn fred_error_message_echoing_the_key_is_masked() {
    let fx = start("series = [\"DCOILWTICO\"]").await;
    let echo = json!({
        "error_code": 400,
        "error_message": format!("Bad Request.  The value {KEY} for variable api_key is not registered."),
    });
    Mock::given(path(OBS))
        .respond_with(ResponseTemplate::new(400).set_body_json(echo))
        .mount(&fx.mock)
        .await;
    assert_fails_without_leaking_the_key(&fx, &["The value *** for variable api_key"]).await;
}

/// End to end: the scheduler fires `fred-daily` (overridden to every second, every other
/// schedule off), the tick's run lands the rows, and a second run of the tick's window adds
/// and changes nothing.
#[tokio::test]
async fn a_cron_tick_runs_fred_and_a_second_run_of_its_window_adds_nothing() {
    init();
    let others: Vec<String> = tributary_workflows::registry()
        .expect("valid workflows")
        .iter()
        .flat_map(|wf| wf.schedules().iter().map(|s| s.spec().name.clone()))
        .filter(|name| name != "fred-daily")
        .collect();
    let fx = SourceFixture::start(|uri| {
        let mut toml = settings(uri, "series = [\"DCOILWTICO\"]\nstart = \"2020-04-08\"");
        toml.push_str("[schedules.fred-daily]\ncron = \"* * * * * *\"\n");
        for name in &others {
            toml.push_str(&format!("[schedules.{name}]\nenabled = false\n"));
        }
        toml
    })
    .await;
    // The first tick's run asks from the configured start; every later one from the cursor.
    Mock::given(path(OBS))
        .and(query_param("observation_start", "2020-04-08"))
        .respond_with(ResponseTemplate::new(200).set_body_json(wti_page1_alone()))
        .mount(&fx.mock)
        .await;
    Mock::given(path(OBS))
        .respond_with(ok("observations_empty.json"))
        .mount(&fx.mock)
        .await;

    let first_success = || async {
        sqlx::query_as::<_, (uuid::Uuid, Value, Option<String>)>(
            "SELECT run_id, input, idempotency_key FROM tributary_runs
             WHERE workflow = 'fred' AND status = 'succeeded' ORDER BY created_at LIMIT 1",
        )
        .fetch_optional(&fx.db)
        .await
        .expect("query runs")
    };
    assert!(
        eventually(WAIT, || async { first_success().await.is_some() }).await,
        "no scheduled fred run succeeded"
    );
    fx.engine
        .pause_schedule("fred-daily", true)
        .await
        .expect("pause");
    let (_, input, key) = first_success().await.expect("a run");
    assert!(
        key.as_deref()
            .is_some_and(|k| k.starts_with("schedule:fred-daily:")),
        "started by a tick: {key:?}"
    );
    assert!(
        input["start"].is_string() && input["end"].is_string(),
        "{input}"
    );
    assert_eq!(fx.count("fred_observations").await, 5);
    assert_eq!(
        value(&fx, "DCOILWTICO", "2020-04-10").await,
        None,
        "\".\" is NULL"
    );
    // Runs of ticks fired before the pause may still be going; they change nothing either.
    let settled = eventually(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tributary_runs WHERE workflow = 'fred' AND status = 'running'",
        )
        .fetch_one(&fx.db)
        .await
        .expect("count running")
            == 0
    })
    .await;
    assert!(settled, "scheduled runs did not finish");
    let before = snapshot(&fx).await;
    fx.run_ok("fred", input).await;
    assert_eq!(snapshot(&fx).await, before);
    assert_eq!(
        fx.cursor("fred", "DCOILWTICO").await,
        Some(json!("2020-04-14"))
    );
}
