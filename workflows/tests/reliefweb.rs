//! The `reliefweb` workflow against a mock of the ReliefWeb API v2, with fixtures built from
//! the API's documented responses (`tests/fixtures/reliefweb/`).

mod support;

use chrono::{DateTime, Utc};
use serde_json::json;
use support::{SourceFixture, assert_failed_with, assert_succeeded};
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

fn settings(uri: &str, page_size: u32) -> String {
    format!(
        "[sources.reliefweb]\nbase-url = \"{uri}/v2\"\nappname = \"acme-venezuela-x7k2\"\npage-size = {page_size}\n"
    )
}

/// (id, updated_at) of every row, by id.
async fn stamps(fx: &SourceFixture) -> Vec<(i64, DateTime<Utc>)> {
    sqlx::query_as("SELECT id, updated_at FROM reliefweb_reports ORDER BY id")
        .fetch_all(&fx.db)
        .await
        .unwrap()
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
    // Page 1: no cursor yet, so no date filter: the whole history, oldest change first.
    Mock::given(method("GET"))
        .and(path("/v2/reports"))
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
        .and(path("/v2/reports"))
        .and(query_param(
            "filter[conditions][1][value][from]",
            "2025-05-02T10:00:00+00:00",
        ))
        .and(query_param("offset", "1"))
        .respond_with(json_body(fixture!("reports_ven_page2.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;

    let view = fx.run("reliefweb", json!({})).await;
    assert_succeeded(&view);
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
    Mock::given(path("/v2/reports"))
        .and(query_param_is_missing("filter[conditions][1][value][from]"))
        .respond_with(json_body(fixture!("reports_ven_page1.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    Mock::given(path("/v2/reports"))
        .and(query_param(
            "filter[conditions][1][value][from]",
            "2025-05-02T10:00:00+00:00",
        ))
        .respond_with(json_body(fixture!("reports_ven_page2.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    // The second run starts at the cursor (inclusive): E again, F new, B edited.
    Mock::given(path("/v2/reports"))
        .and(query_param(
            "filter[conditions][1][value][from]",
            "2025-05-03T09:30:00+00:00",
        ))
        .and(query_param("offset", "0"))
        .respond_with(json_body(fixture!("reports_ven_since_cursor.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;

    assert_succeeded(&fx.run("reliefweb", json!({})).await);
    let before = stamps(&fx).await;
    let view = fx.run("reliefweb", json!({})).await;
    assert_succeeded(&view);
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
        if *id == 4123456 {
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
    Mock::given(path("/v2/reports"))
        .and(query_param(
            "filter[conditions][1][value][to]",
            "2025-05-05T06:00:00+00:00",
        ))
        .respond_with(json_body(fixture!("reports_ven_all.json")))
        .expect(2)
        .mount(&fx.mock)
        .await;

    assert_succeeded(&fx.run("reliefweb", window.clone()).await);
    let rows = fx.count("reliefweb_reports").await;
    let before = stamps(&fx).await;
    let cursor = fx.cursor("reliefweb", "").await;

    let view = fx.run("reliefweb", window).await;
    assert_succeeded(&view);
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
    Mock::given(path("/v2/reports"))
        .respond_with(json_body(fixture!("reports_empty.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    let view = fx.run("reliefweb", json!({})).await;
    assert_succeeded(&view);
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 0);
    assert_eq!(fx.cursor("reliefweb", "").await, None);
    assert_eq!(view.output.unwrap()["complete"], true);
}

#[tokio::test]
async fn reliefweb_malformed_date_fails_naming_the_report_and_field_and_writes_nothing() {
    let fx = SourceFixture::start(|uri| settings(uri, 3)).await;
    Mock::given(path("/v2/reports"))
        .respond_with(json_body(fixture!("reports_ven_malformed.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    let view = fx.run("reliefweb", json!({})).await;
    assert_failed_with(
        &view,
        "reliefweb: record 4123456: field date.changed: \"29/04/2025 08:12\" is not an ISO 8601 date",
    );
    fx.mock.verify().await;
    // The good report of the same page is not written either.
    assert_eq!(fx.count("reliefweb_reports").await, 0);
    assert_eq!(fx.cursor("reliefweb", "").await, None);
}

#[tokio::test]
async fn reliefweb_html_where_json_was_expected_is_fatal_and_quoted() {
    let fx = SourceFixture::start(|uri| settings(uri, 3)).await;
    Mock::given(path("/v2/reports"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><head><title>ReliefWeb - Maintenance</title></head><body><h1>Site under maintenance</h1></body></html>",
            "text/html; charset=UTF-8",
        ))
        .expect(1)
        .mount(&fx.mock)
        .await;
    let view = fx.run("reliefweb", json!({})).await;
    assert_failed_with(&view, "expected JSON, got text/html");
    assert_failed_with(&view, "Site under maintenance");
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 0);
}

#[tokio::test]
async fn reliefweb_429_with_retry_after_is_waited_out_then_succeeds() {
    let fx = SourceFixture::start(|uri| settings(uri, 1000)).await;
    Mock::given(path("/v2/reports"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_raw(r#"{"status":429}"#, "application/json"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&fx.mock)
        .await;
    Mock::given(path("/v2/reports"))
        .respond_with(json_body(fixture!("reports_ven_all.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    let started = std::time::Instant::now();
    assert_succeeded(&fx.run("reliefweb", json!({})).await);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 5);
}

#[tokio::test]
async fn reliefweb_502_gateway_page_is_retried_then_succeeds() {
    let fx = SourceFixture::start(|uri| settings(uri, 1000)).await;
    Mock::given(path("/v2/reports"))
        .respond_with(
            ResponseTemplate::new(502).set_body_raw(fixture!("502_gateway.html"), "text/html"),
        )
        .up_to_n_times(2)
        .expect(2)
        .mount(&fx.mock)
        .await;
    Mock::given(path("/v2/reports"))
        .respond_with(json_body(fixture!("reports_ven_all.json")))
        .expect(1)
        .mount(&fx.mock)
        .await;
    assert_succeeded(&fx.run("reliefweb", json!({})).await);
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 5);
}

#[tokio::test]
async fn reliefweb_unapproved_appname_is_fatal_with_the_apis_message() {
    let fx = SourceFixture::start(|uri| settings(uri, 1000)).await;
    Mock::given(path("/v2/reports"))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_raw(fixture!("403_unapproved_appname.json"), "application/json"),
        )
        .expect(1) // fatal: asked once, not retried
        .mount(&fx.mock)
        .await;
    let view = fx.run("reliefweb", json!({})).await;
    assert_failed_with(&view, "HTTP 403");
    assert_failed_with(&view, "You are not using an approved appname");
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 0);
}

#[tokio::test]
async fn reliefweb_missing_appname_and_decommissioned_v1_are_fatal_with_the_apis_message() {
    // An operator who kept an old `/v1` base URL.
    let fx = SourceFixture::start(|uri| {
        format!("[sources.reliefweb]\nbase-url = \"{uri}/v1\"\nappname = \"acme-venezuela-x7k2\"\n")
    })
    .await;
    Mock::given(path("/v1/reports"))
        .respond_with(
            ResponseTemplate::new(410).set_body_raw(fixture!("410_v1.json"), "application/json"),
        )
        .expect(1)
        .mount(&fx.mock)
        .await;
    let view = fx.run("reliefweb", json!({})).await;
    assert_failed_with(&view, "HTTP 410");
    assert_failed_with(&view, "The API version 'v1' has been decommissioned");
    fx.mock.verify().await;

    // A proxy that drops the query string: the API says the appname is missing.
    fx.mock.reset().await;
    Mock::given(path("/v1/reports"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_raw(fixture!("400_missing_appname.json"), "application/json"),
        )
        .expect(1)
        .mount(&fx.mock)
        .await;
    let view = fx.run("reliefweb", json!({})).await;
    assert_failed_with(&view, "HTTP 400");
    assert_failed_with(&view, "Missing appname parameter");
    fx.mock.verify().await;
    assert_eq!(fx.count("reliefweb_reports").await, 0);
}

#[tokio::test]
async fn reliefweb_invalid_settings_fail_at_start_up_naming_the_key() {
    let mut config = tributary::config::Config::default();
    config.sources.insert(
        "reliefweb".into(),
        toml::from_str("page-size = 5000").unwrap(),
    );
    // Checked when the ingestion resources are built, before any connection is made.
    let e = tributary_workflows::sources::Ingest::connect(
        std::sync::Arc::new(config),
        tributary::ratelimit::RateLimiter::local_only(Default::default()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("sources.reliefweb") && e.contains("1 to 1000"),
        "{e}"
    );
}
