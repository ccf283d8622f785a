//! The `reliefweb` workflow against a mock of the ReliefWeb API v2, with fixtures built from
//! the API's documented responses (`tests/fixtures/reliefweb/`).

mod support;

use chrono::{DateTime, Utc};
use serde_json::json;
use support::{SourceFixture, answer, answer_first, assert_failed_with, startup_error};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/reliefweb/", $name))
    };
}

fn json_body(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.to_owned(), "application/json")
}

/// An error status with the API's JSON explanation.
fn error_body(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_owned(), "application/json")
}

fn settings(uri: &str, page_size: u32) -> String {
    format!(
        "[sources.reliefweb]\nbase-url = \"{uri}/v2\"\nappname = \"acme-venezuela-x7k2\"\npage-size = {page_size}\n"
    )
}

const REPORTS: &str = "/v2/reports";

/// (id, updated_at) of every row, by id.
async fn stamps(fx: &SourceFixture) -> Vec<(String, DateTime<Utc>)> {
    fx.snapshot("reliefweb_reports", "id").await
}

/// Runs `reliefweb` expecting it to fail with each of `errors`, having asked the mock what it
/// expected and stored no report.
async fn assert_fails_with(fx: &SourceFixture, errors: &[&str]) {
    let view = fx.run("reliefweb", json!({})).await;
    for error in errors {
        assert_failed_with(&view, error);
    }
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 0);
}

/// Serves a first run with a page size of 3 its two pages (5 reports), each asked once.
async fn serve_first_run(fx: &SourceFixture) {
    // Page 1: no cursor yet, so no date filter: the whole history, oldest change first.
    Mock::given(method("GET"))
        .and(path(REPORTS))
        .and(query_param("appname", "acme-venezuela-x7k2"))
        .and(query_param("limit", "3"))
        .and(query_param("offset", "0"))
        .and(query_param("sort[]", "date.changed:asc"))
        .and(query_param("sort[]", "id:asc"))
        .and(query_param("filter[conditions][0][field]", "country.iso3"))
        .and(query_param("filter[conditions][0][value]", "ven"))
        .and(query_param_is_missing("filter[conditions][1][value][from]"))
        .respond_with(json_body(fixture!("reports_ven_page1.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    // Page 2 starts at page 1's newest second and skips the one report of it already seen.
    Mock::given(method("GET"))
        .and(path(REPORTS))
        .and(query_param(
            "filter[conditions][1][value][from]",
            "2025-05-02T10:00:00+00:00",
        ))
        .and(query_param("offset", "1"))
        .respond_with(json_body(fixture!("reports_ven_page2.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
}

#[derive(sqlx::FromRow)]
struct Full {
    title: String,
    date_changed: DateTime<Utc>,
    date_original: Option<DateTime<Utc>>,
    source_shortnames: Vec<String>,
    themes: Vec<String>,
    languages: Vec<String>,
    country_iso3: Vec<String>,
    body: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Sparse {
    url: Option<String>,
    body: Option<String>,
    origin: Option<String>,
    themes: Vec<String>,
    country_iso3: Vec<String>,
    primary_country_iso3: String,
}

#[tokio::test]
async fn reliefweb_walks_every_page_and_keeps_missing_fields_as_null() {
    let fx = SourceFixture::start(|uri| settings(uri, 3)).await;
    serve_first_run(&fx).await;

    let view = fx.run_ok("reliefweb", json!({})).await;
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 5);
    let out = view.output.unwrap();
    assert_eq!(out["pages"], 2);
    assert_eq!(out["inserted"], 5);
    assert_eq!(out["complete"], true);
    assert_eq!(
        fx.cursor("reliefweb", "").await,
        Some(json!("2025-05-03T09:30:00Z"))
    );

    // A fully described report.
    let row: Full = sqlx::query_as(
        "SELECT title, date_changed, date_original, source_shortnames, themes, languages,
                country_iso3, body
         FROM reliefweb_reports WHERE id = 4123456",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert!(
        row.title
            .starts_with("Venezuela: Humanitarian Response Plan")
    );
    assert_eq!(row.date_changed.to_rfc3339(), "2025-04-29T08:12:44+00:00");
    assert_eq!(
        row.date_original.unwrap().to_rfc3339(),
        "2025-04-28T00:00:00+00:00"
    );
    assert_eq!(row.source_shortnames, ["OCHA"]);
    assert_eq!(row.themes, ["Coordination", "Health"]);
    assert_eq!(row.languages, ["es"]);
    assert_eq!(row.country_iso3, ["ven"]);
    assert!(row.body.unwrap().contains("2.6 million"));

    // A sparse report: absent fields are NULL or empty lists, not invented values.
    let sparse: Sparse = sqlx::query_as(
        "SELECT url, body, origin, themes, country_iso3, primary_country_iso3
         FROM reliefweb_reports WHERE id = 4123001",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!((sparse.url, sparse.body, sparse.origin), (None, None, None));
    assert!(sparse.themes.is_empty() && sparse.country_iso3.is_empty());
    assert_eq!(sparse.primary_country_iso3, "ven");
    let no_original: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT date_original FROM reliefweb_reports WHERE id = 4123600")
            .fetch_one(&fx.db)
            .await
            .unwrap();
    assert_eq!(no_original, None);
    // A regional report that tags Venezuela keeps both countries and its primary one.
    let regional: (String, Vec<String>) = sqlx::query_as(
        "SELECT primary_country_iso3, country_iso3 FROM reliefweb_reports WHERE id = 4123500",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!(
        regional,
        ("col".to_owned(), vec!["col".into(), "ven".into()])
    );
}

#[tokio::test]
async fn reliefweb_second_run_asks_only_for_reports_changed_since_the_cursor() {
    let fx = SourceFixture::start(|uri| settings(uri, 3)).await;
    serve_first_run(&fx).await;
    // The second run starts at the cursor (inclusive): E again, F new, B edited.
    Mock::given(path(REPORTS))
        .and(query_param(
            "filter[conditions][1][value][from]",
            "2025-05-03T09:30:00+00:00",
        ))
        .and(query_param("offset", "0"))
        .respond_with(json_body(fixture!("reports_ven_since_cursor.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;

    fx.run_ok("reliefweb", json!({})).await;
    let before = stamps(&fx).await;
    let view = fx.run_ok("reliefweb", json!({})).await;
    fx.mock.verify().await;

    let out = view.output.unwrap();
    assert_eq!(
        (&out["inserted"], &out["updated"], &out["unchanged"]),
        (&json!(1), &json!(1), &json!(1)),
        "{out}"
    );
    assert_eq!(fx.count("reliefweb_reports").await, 6);
    assert_eq!(
        fx.cursor("reliefweb", "").await,
        Some(json!("2025-05-04T12:00:00Z"))
    );
    let after = stamps(&fx).await;
    for (id, stamp) in &before {
        let now = after.iter().find(|(i, _)| i == id).unwrap().1;
        if id == "4123456" {
            assert!(now > *stamp, "the edited report's updated_at moves");
        } else {
            assert_eq!(now, *stamp, "report {id} was not touched");
        }
    }
    let title: String =
        sqlx::query_scalar("SELECT title FROM reliefweb_reports WHERE id = 4123456")
            .fetch_one(&fx.db)
            .await
            .unwrap();
    assert!(title.ends_with("[corrected]"), "{title}");
}

#[tokio::test]
async fn reliefweb_rerunning_the_same_window_adds_and_changes_nothing() {
    let fx = SourceFixture::start(|uri| settings(uri, 1000)).await;
    let window = json!({"start": "2025-05-01T06:00:00Z", "end": "2025-05-05T06:00:00Z"});
    // The window's end bounds the changes asked for.
    Mock::given(path(REPORTS))
        .and(query_param(
            "filter[conditions][1][value][to]",
            "2025-05-05T06:00:00+00:00",
        ))
        .respond_with(json_body(fixture!("reports_ven_all.json")))
        .expect(2)
        .mount(&fx.mock)
        .await;

    fx.run_ok("reliefweb", window.clone()).await;
    let rows = fx.count("reliefweb_reports").await;
    let before = stamps(&fx).await;
    let cursor = fx.cursor("reliefweb", "").await;

    let view = fx.run_ok("reliefweb", window).await;
    fx.mock.verify().await;
    let out = view.output.unwrap();
    assert_eq!(
        (&out["inserted"], &out["updated"], &out["unchanged"]),
        (&json!(0), &json!(0), &json!(5)),
        "{out}"
    );
    assert_eq!(fx.count("reliefweb_reports").await, rows);
    assert_eq!(stamps(&fx).await, before);
    assert_eq!(fx.cursor("reliefweb", "").await, cursor);
}

#[tokio::test]
async fn reliefweb_empty_result_stores_nothing_and_leaves_no_cursor() {
    let fx = SourceFixture::start(|uri| settings(uri, 3)).await;
    answer(
        &fx.mock,
        REPORTS,
        json_body(fixture!("reports_empty.json")),
        1,
    )
    .await;
    let view = fx.run_ok("reliefweb", json!({})).await;
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 0);
    assert_eq!(fx.cursor("reliefweb", "").await, None);
    assert_eq!(view.output.unwrap()["complete"], true);
}

#[tokio::test]
async fn reliefweb_malformed_date_fails_naming_the_report_and_field_and_writes_nothing() {
    let fx = SourceFixture::start(|uri| settings(uri, 3)).await;
    let malformed = json_body(fixture!("reports_ven_malformed.json"));
    answer(&fx.mock, REPORTS, malformed, 1).await;
    // The good report of the same page is not written either.
    assert_fails_with(
        &fx,
        &["reliefweb: record 4123456: field date.changed: \"29/04/2025 08:12\" is not an ISO 8601 date"],
    )
    .await;
    assert_eq!(fx.cursor("reliefweb", "").await, None);
}

#[tokio::test]
async fn reliefweb_html_where_json_was_expected_is_fatal_and_quoted() {
    let fx = SourceFixture::start(|uri| settings(uri, 3)).await;
    let html = ResponseTemplate::new(200).set_body_raw(
        "<!DOCTYPE html><html><head><title>ReliefWeb - Maintenance</title></head><body><h1>Site under maintenance</h1></body></html>",
        "text/html; charset=UTF-8",
    );
    answer(&fx.mock, REPORTS, html, 1).await;
    assert_fails_with(
        &fx,
        &["expected JSON, got text/html", "Site under maintenance"],
    )
    .await;
}

#[tokio::test]
async fn reliefweb_429_with_retry_after_is_waited_out_then_succeeds() {
    let fx = SourceFixture::start(|uri| settings(uri, 1000)).await;
    let throttled = ResponseTemplate::new(429)
        .insert_header("Retry-After", "1")
        .set_body_raw(r#"{"status":429}"#, "application/json");
    answer_first(&fx.mock, REPORTS, throttled, 1).await;
    answer(
        &fx.mock,
        REPORTS,
        json_body(fixture!("reports_ven_all.json")),
        1,
    )
    .await;
    let started = std::time::Instant::now();
    fx.run_ok("reliefweb", json!({})).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 5);
}

#[tokio::test]
async fn reliefweb_502_gateway_page_is_retried_then_succeeds() {
    let fx = SourceFixture::start(|uri| settings(uri, 1000)).await;
    let gateway =
        ResponseTemplate::new(502).set_body_raw(fixture!("502_gateway.html"), "text/html");
    answer_first(&fx.mock, REPORTS, gateway, 2).await;
    answer(
        &fx.mock,
        REPORTS,
        json_body(fixture!("reports_ven_all.json")),
        1,
    )
    .await;
    fx.run_ok("reliefweb", json!({})).await;
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 5);
}

#[tokio::test]
async fn reliefweb_unapproved_appname_is_fatal_with_the_apis_message() {
    let fx = SourceFixture::start(|uri| settings(uri, 1000)).await;
    let refused = error_body(403, fixture!("403_unapproved_appname.json"));
    answer(&fx.mock, REPORTS, refused, 1).await; // fatal: asked once, not retried
    assert_fails_with(&fx, &["HTTP 403", "You are not using an approved appname"]).await;
}

#[tokio::test]
async fn reliefweb_missing_appname_and_decommissioned_v1_are_fatal_with_the_apis_message() {
    // An operator who kept an old `/v1` base URL.
    let fx = SourceFixture::start(|uri| {
        format!("[sources.reliefweb]\nbase-url = \"{uri}/v1\"\nappname = \"acme-venezuela-x7k2\"\n")
    })
    .await;
    let gone = error_body(410, fixture!("410_v1.json"));
    answer(&fx.mock, "/v1/reports", gone, 1).await;
    let decommissioned = "The API version 'v1' has been decommissioned";
    assert_fails_with(&fx, &["HTTP 410", decommissioned]).await;

    // A proxy that drops the query string: the API says the appname is missing.
    fx.mock.reset().await;
    let missing = error_body(400, fixture!("400_missing_appname.json"));
    answer(&fx.mock, "/v1/reports", missing, 1).await;
    assert_fails_with(&fx, &["HTTP 400", "Missing appname parameter"]).await;
}

#[tokio::test]
async fn reliefweb_invalid_settings_fail_at_start_up_naming_the_key() {
    let e = startup_error("reliefweb", "page-size = 5000").await;
    assert!(
        e.contains("sources.reliefweb") && e.contains("1 to 1000"),
        "{e}"
    );
}
