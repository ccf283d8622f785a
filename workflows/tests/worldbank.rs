//! The `worldbank` workflow against a mock of the World Bank Indicators API v2, with fixtures
//! built from the API's documented responses (`tests/fixtures/worldbank/`).

mod support;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use support::{SourceFixture, answer, answer_first, assert_failed_with, startup_error};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/worldbank/", $name))
    };
}

fn json_body(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.to_owned(), "application/json;charset=utf-8")
}

fn settings(uri: &str, indicators: &[&str], per_page: u32) -> String {
    let list: Vec<String> = indicators.iter().map(|i| format!("{i:?}")).collect();
    format!(
        "[sources.worldbank]\nbase-url = \"{uri}/v2\"\nindicators = [{}]\ndate = \"2010:2024\"\nper-page = {per_page}\n",
        list.join(", ")
    )
}

const GDP: &str = "/v2/country/VEN/indicator/NY.GDP.MKTP.CD";
const CPI: &str = "/v2/country/VEN/indicator/FP.CPI.TOTL.ZG";

/// ("indicator/period", updated_at) of every row.
async fn stamps(fx: &SourceFixture) -> Vec<(String, DateTime<Utc>)> {
    fx.snapshot("worldbank_observations", "indicator_id, period")
        .await
}

/// Runs `worldbank` expecting it to fail with `error`, having asked the mock what it expected
/// and stored no observation.
async fn assert_fails_with(fx: &SourceFixture, error: &str) {
    let view = fx.run("worldbank", json!({})).await;
    assert_failed_with(&view, error);
    fx.mock.verify().await;
    assert_eq!(fx.count("worldbank_observations").await, 0);
}

#[derive(sqlx::FromRow)]
struct Obs {
    value: Option<String>,
    year: i32,
    frequency: String,
    period_start: NaiveDate,
    unit: Option<String>,
    obs_status: Option<String>,
    indicator_name: Option<String>,
    country_name: Option<String>,
}

#[tokio::test]
async fn worldbank_follows_every_page_of_every_indicator_and_keeps_null_values_as_null() {
    let quarterly = "DP.DOD.DECT.CR.GG.CD";
    let fx = SourceFixture::start(|uri| {
        settings(uri, &["NY.GDP.MKTP.CD", "FP.CPI.TOTL.ZG", quarterly], 3)
    })
    .await;
    for (page, body) in [
        ("1", fixture!("ven_gdp_page1.json")),
        ("2", fixture!("ven_gdp_page2.json")),
    ] {
        Mock::given(method("GET"))
            .and(path(GDP))
            .and(query_param("format", "json"))
            .and(query_param("date", "2010:2024"))
            .and(query_param("per_page", "3"))
            .and(query_param("page", page))
            .respond_with(json_body(body))
            .expect(1)
            .mount(&fx.mock)
            .await;
    }
    Mock::given(path(CPI))
        .and(query_param("page", "1"))
        .respond_with(json_body(fixture!("ven_cpi.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    Mock::given(path(format!("/v2/country/VEN/indicator/{quarterly}")))
        .and(query_param("page", "1"))
        .respond_with(json_body(fixture!("ven_quarterly.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;

    let view = fx.run_ok("worldbank", json!({})).await;
    fx.mock.verify().await;
    assert_eq!(fx.count("worldbank_observations").await, 5 + 4 + 3);
    assert_eq!(view.output.unwrap()["inserted"], 12);

    // Missing values are rows with a NULL value, not absent rows and not zeros.
    let nulls: Vec<String> = sqlx::query_scalar(
        "SELECT period FROM worldbank_observations
         WHERE indicator_id = 'NY.GDP.MKTP.CD' AND value IS NULL ORDER BY period",
    )
    .fetch_all(&fx.db)
    .await
    .unwrap();
    assert_eq!(nulls, ["2015", "2024"]);
    let row: Obs = sqlx::query_as(
        "SELECT value::text AS value, year, frequency, period_start, unit, obs_status,
                indicator_name, country_name
         FROM worldbank_observations
         WHERE indicator_id = 'NY.GDP.MKTP.CD' AND country_iso3 = 'VEN' AND period = '2014'",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!(row.value.as_deref(), Some("482359318767.703"));
    assert_eq!((row.year, row.frequency.as_str()), (2014, "A"));
    assert_eq!(
        row.period_start,
        NaiveDate::from_ymd_opt(2014, 1, 1).unwrap()
    );
    assert_eq!(
        (row.unit, row.obs_status),
        (None, None),
        "empty strings are NULL"
    );
    assert_eq!(row.indicator_name.as_deref(), Some("GDP (current US$)"));
    assert_eq!(row.country_name.as_deref(), Some("Venezuela, RB"));
    let cpi: String = sqlx::query_scalar(
        "SELECT value::text FROM worldbank_observations
         WHERE indicator_id = 'FP.CPI.TOTL.ZG' AND period = '2014'",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!(cpi, "62");
    // Quarterly periods keep their text and get their year and first day.
    let q: (i32, String, NaiveDate, Option<String>) = sqlx::query_as(
        "SELECT year, frequency, period_start, obs_status FROM worldbank_observations
         WHERE period = '2024Q1'",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!(
        q,
        (
            2024,
            "Q".to_owned(),
            NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            Some("E".to_owned())
        )
    );
    // One cursor per indicator: its lastupdated.
    assert_eq!(
        fx.cursor("worldbank", "NY.GDP.MKTP.CD").await,
        Some(json!("2025-07-01"))
    );
    assert_eq!(
        fx.cursor("worldbank", quarterly).await,
        Some(json!("2025-06-30"))
    );
}

#[tokio::test]
async fn worldbank_rerun_changes_nothing_and_a_revision_updates_only_its_row() {
    let fx =
        SourceFixture::start(|uri| settings(uri, &["NY.GDP.MKTP.CD", "FP.CPI.TOTL.ZG"], 3)).await;
    for (page, body) in [
        ("1", fixture!("ven_gdp_page1.json")),
        ("2", fixture!("ven_gdp_page2.json")),
    ] {
        Mock::given(path(GDP))
            .and(query_param("page", page))
            .respond_with(json_body(body))
            .up_to_n_times(2)
            .expect(2)
            .mount(&fx.mock)
            .await;
    }
    answer(&fx.mock, CPI, json_body(fixture!("ven_cpi.json")), 3).await;
    let window = json!({"start": "2025-04-01T05:00:00Z", "end": "2025-07-01T05:00:00Z"});

    fx.run_ok("worldbank", window.clone()).await;
    let rows = fx.count("worldbank_observations").await;
    let before = stamps(&fx).await;
    let view = fx.run_ok("worldbank", window.clone()).await;
    let out = view.output.unwrap();
    assert_eq!(
        (&out["inserted"], &out["updated"]),
        (&json!(0), &json!(0)),
        "{out}"
    );
    assert_eq!(fx.count("worldbank_observations").await, rows);
    assert_eq!(stamps(&fx).await, before);

    // The series is revised: 2015 gets a value (null → number), lastupdated moves.
    answer(
        &fx.mock,
        GDP,
        json_body(fixture!("ven_gdp_revised.json")),
        1,
    )
    .await;
    let view = fx.run_ok("worldbank", window).await;
    fx.mock.verify().await;
    let out = view.output.unwrap();
    assert_eq!(
        (&out["inserted"], &out["updated"]),
        (&json!(0), &json!(1)),
        "{out}"
    );
    let after = stamps(&fx).await;
    for ((key, was), (_, now)) in before.iter().zip(&after) {
        if key == "NY.GDP.MKTP.CD/2015" {
            assert!(now > was, "the revised row's updated_at moves");
        } else {
            assert_eq!(now, was, "{key} was not touched");
        }
    }
    let value: Option<String> = sqlx::query_scalar(
        "SELECT value::text FROM worldbank_observations
         WHERE indicator_id = 'NY.GDP.MKTP.CD' AND period = '2015'",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!(value.as_deref(), Some("344331237113.402"));
    assert_eq!(
        fx.cursor("worldbank", "NY.GDP.MKTP.CD").await,
        Some(json!("2025-10-07"))
    );
}

#[tokio::test]
async fn worldbank_empty_series_stores_nothing_and_succeeds() {
    let fx = SourceFixture::start(|uri| settings(uri, &["NY.GDP.MKTP.CD"], 1000)).await;
    answer(&fx.mock, GDP, json_body(fixture!("empty.json")), 1).await;
    let view = fx.run_ok("worldbank", json!({})).await;
    fx.mock.verify().await;
    assert_eq!(fx.count("worldbank_observations").await, 0);
    assert_eq!(view.output.unwrap()["indicators"][0]["observations"], 0);
}

#[tokio::test]
async fn worldbank_default_date_range_ends_with_the_windows_year() {
    let fx = SourceFixture::start(|uri| {
        format!("[sources.worldbank]\nbase-url = \"{uri}/v2\"\nindicators = [\"NY.GDP.MKTP.CD\"]\n")
    })
    .await;
    Mock::given(path(GDP))
        .and(query_param("date", "1960:2025"))
        .and(query_param("per_page", "1000"))
        .respond_with(json_body(fixture!("empty.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    let window = json!({"start": "2025-04-01T05:00:00Z", "end": "2025-07-01T05:00:00Z"});
    fx.run_ok("worldbank", window).await;
    fx.mock.verify().await;
}

#[tokio::test]
async fn worldbank_api_error_message_is_fatal_with_its_text() {
    let fx = SourceFixture::start(|uri| settings(uri, &["NY.GDP.MKTP.CD", "FP.CPI.TOTL.ZG"], 1000))
        .await;
    Mock::given(path(GDP))
        .respond_with(json_body(fixture!("ven_gdp_revised.json")))
        .mount(&fx.mock)
        .await;
    // HTTP 200 with a message array: an error, asked once, not retried.
    answer(&fx.mock, CPI, json_body(fixture!("error_120.json")), 1).await;
    // The run fails before any indicator is stored.
    assert_fails_with(
        &fx,
        "worldbank: FP.CPI.TOTL.ZG: the API answered error 120 (Invalid value): The provided parameter value is not valid",
    )
    .await;
}

#[tokio::test]
async fn worldbank_malformed_value_fails_naming_the_record_and_field_and_writes_nothing() {
    let fx = SourceFixture::start(|uri| settings(uri, &["NY.GDP.MKTP.CD"], 1000)).await;
    answer(
        &fx.mock,
        GDP,
        json_body(fixture!("ven_gdp_malformed.json")),
        1,
    )
    .await;
    assert_fails_with(
        &fx,
        "worldbank: record NY.GDP.MKTP.CD/VEN/2014: field value: \"n/a\" is not a number or null",
    )
    .await;
    assert_eq!(fx.cursor("worldbank", "NY.GDP.MKTP.CD").await, None);
}

#[tokio::test]
async fn worldbank_429_with_retry_after_and_503_pages_are_retried_then_succeed() {
    let fx = SourceFixture::start(|uri| settings(uri, &["NY.GDP.MKTP.CD", "FP.CPI.TOTL.ZG"], 1000))
        .await;
    let throttled = ResponseTemplate::new(429)
        .insert_header("Retry-After", "1")
        .set_body_raw("Too Many Requests", "text/plain");
    answer_first(&fx.mock, GDP, throttled, 1).await;
    answer(
        &fx.mock,
        GDP,
        json_body(fixture!("ven_gdp_revised.json")),
        1,
    )
    .await;
    // Under load the API answers 503 with an HTML page.
    let overloaded = ResponseTemplate::new(503).set_body_raw(fixture!("503.html"), "text/html");
    answer_first(&fx.mock, CPI, overloaded, 2).await;
    answer(&fx.mock, CPI, json_body(fixture!("ven_cpi.json")), 1).await;
    let started = std::time::Instant::now();
    fx.run_ok("worldbank", json!({})).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    fx.mock.verify().await;
    assert_eq!(fx.count("worldbank_observations").await, 5 + 4);
}

#[tokio::test]
async fn worldbank_invalid_settings_fail_at_start_up_naming_the_key() {
    let e = startup_error("worldbank", "indicators = [\"NY.GDP.MKTP.CD\", \"../etc\"]").await;
    assert!(
        e.contains("sources.worldbank") && e.contains("not an indicator id"),
        "{e}"
    );
}
