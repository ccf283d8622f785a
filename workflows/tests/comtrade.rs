//! The `comtrade` workflow against a mock Comtrade: Venezuela's own and mirror flows per
//! period, periods already loaded skipped, idempotent re-runs, and the API's failure modes
//! (malformed records, an `error` in a 200, truncation, throttling, a spent quota, 5xx, a bad
//! key).

mod support;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::{SourceFixture, assert_failed_with};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockBuilder, ResponseTemplate};

/// The subscription key every test sends (32 hex digits, like a real one); finding it in
/// PostgreSQL means it leaked.
const KEY: &str = "c0ffee00c4a4a7c0ffee00c4a4a7beef";

/// Passes the subscription key as an operator would (first, before anything starts), then
/// starts a fixture with `extra` in its settings.
async fn start(extra: &str) -> SourceFixture {
    support::set_secret_env("TRIBUTARY_SECRET_COMTRADE_SUBSCRIPTION_KEY", KEY);
    SourceFixture::start(|uri| settings(uri, extra)).await
}

fn fixture(name: &str) -> Value {
    support::json_fixture("comtrade", name)
}

/// `[sources.comtrade]` against the mock, from 2012 unless `extra` says otherwise.
fn settings(uri: &str, extra: &str) -> String {
    let start = if extra.contains("start-year") {
        ""
    } else {
        "start-year = 2012\n"
    };
    format!("[sources.comtrade]\nbase-url = \"{uri}/data/v1\"\n{start}{extra}\n")
}

/// Periods 2012, 2013 and 2014 are complete at this window's end.
fn window_2015() -> Value {
    json!({"start": "2015-02-05T06:00:00Z", "end": "2015-03-05T06:00:00Z"})
}

const REPORTER: &str = "C/A/HS reporterCode=862 partnerCode=* cmdCode=TOTAL flowCode=M,X";
const MIRROR: &str = "C/A/HS reporterCode=* partnerCode=862 cmdCode=TOTAL flowCode=M,X";

#[derive(Clone, Copy)]
enum Query {
    /// Venezuela's own reports: `reporterCode=862`, every partner.
    Reporter,
    /// Its partners' reports: `partnerCode=862`, every reporter.
    Mirror,
}

/// A GET of one (query, period) with every fixed parameter the workflow sends.
fn asked(query: Query, period: &str) -> MockBuilder {
    let builder = Mock::given(method("GET"))
        .and(path("/data/v1/get/C/A/HS"))
        .and(query_param("period", period))
        .and(query_param("subscription-key", KEY))
        .and(query_param("cmdCode", "TOTAL"))
        .and(query_param("flowCode", "M,X"))
        .and(query_param("partner2Code", "0"))
        .and(query_param("customsCode", "C00"))
        .and(query_param("motCode", "0"))
        .and(query_param("format", "JSON"))
        .and(query_param("includeDesc", "true"));
    match query {
        Query::Reporter => builder
            .and(query_param("reporterCode", "862"))
            .and(query_param_is_missing("partnerCode")),
        Query::Mirror => builder
            .and(query_param("partnerCode", "862"))
            .and(query_param_is_missing("reporterCode")),
    }
}

/// Answers one (query, period) with `response`, expecting `times` calls.
async fn answer(
    fx: &SourceFixture,
    query: Query,
    period: &str,
    response: ResponseTemplate,
    times: u64,
) {
    asked(query, period)
        .respond_with(response)
        .expect(times)
        .mount(&fx.mock)
        .await;
}

/// As [`answer`], for the first `times` calls only: later ones fall through to the mocks
/// mounted after it (a failure that a retry gets past).
async fn answer_first(
    fx: &SourceFixture,
    query: Query,
    period: &str,
    response: ResponseTemplate,
    times: u64,
) {
    asked(query, period)
        .respond_with(response)
        .up_to_n_times(times)
        .expect(times)
        .mount(&fx.mock)
        .await;
}

/// Serves one (query, period) from a fixture, expecting `times` calls.
async fn serve(fx: &SourceFixture, query: Query, period: &str, body: &str, times: u64) {
    let response = ResponseTemplate::new(200).set_body_json(fixture(body));
    answer(fx, query, period, response, times).await;
}

/// Serves 2012-2014: Venezuela reported 2012 and 2013 (10 records) but not 2014; its
/// partners reported all three (15 records). `times` are the calls expected of each, in this
/// order; 0 leaves that one to the test.
async fn serve_2012_to_2014(fx: &SourceFixture, times: [u64; 6]) {
    let answers = [
        (Query::Reporter, "2012", "get_reporter_ven_2012.json"),
        (Query::Reporter, "2013", "get_reporter_ven_2013.json"),
        (Query::Reporter, "2014", "get_empty.json"),
        (Query::Mirror, "2012", "get_mirror_ven_2012.json"),
        (Query::Mirror, "2013", "get_mirror_ven_2013.json"),
        (Query::Mirror, "2014", "get_mirror_ven_2014.json"),
    ];
    for ((query, period, body), times) in answers.into_iter().zip(times) {
        if times > 0 {
            serve(fx, query, period, body, times).await;
        }
    }
}

/// Serves 2014 alone, once each: Venezuela reported nothing, its partners 4 records.
async fn serve_2014(fx: &SourceFixture) {
    serve(fx, Query::Reporter, "2014", "get_empty.json", 1).await;
    serve(fx, Query::Mirror, "2014", "get_mirror_ven_2014.json", 1).await;
}

/// Every row's key and updated_at, to show that a re-run touched nothing.
async fn snapshot(fx: &SourceFixture) -> Vec<(String, DateTime<Utc>)> {
    fx.snapshot(
        "comtrade_flows",
        "period, reporter_code, partner_code, flow_code",
    )
    .await
}

/// (query, period, records) of the loaded periods.
async fn loaded(fx: &SourceFixture) -> Vec<(String, String, i32)> {
    sqlx::query_as("SELECT query, period, records FROM comtrade_loaded_periods ORDER BY 1, 2")
        .fetch_all(&fx.db)
        .await
        .expect("loaded periods")
}

/// The retries recorded in the run's audit trail.
fn retries(view: &tributary::store::RunView) -> Vec<String> {
    view.events
        .iter()
        .filter(|e| e.kind == "step_retried")
        .map(|e| e.detail.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn comtrade_loads_venezuelas_own_and_mirror_flows_for_each_period() {
    let fx = start("").await;
    serve_2012_to_2014(&fx, [1; 6]).await;

    fx.run_ok("comtrade", window_2015()).await;
    assert_eq!(fx.count("comtrade_flows").await, 25);
    // A US import from Venezuela: CIF value, no FOB value (NULL), weight in kg.
    let (primary, fob, cif, wgt, ref_date, month): (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        i32,
    ) = sqlx::query_as(
        "SELECT primary_value::text, fob_value::text, cif_value::text, net_wgt::text,
                ref_date::text, ref_month
         FROM comtrade_flows
         WHERE period = '2012' AND reporter_code = 842 AND partner_code = 862 AND flow_code = 'M'",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!(primary.parse::<f64>().unwrap(), 38_706_250_812.0);
    assert_eq!(fob, None);
    assert_eq!(
        cif.map(|c| c.parse::<f64>().unwrap()),
        Some(38_706_250_812.0)
    );
    assert_eq!(
        wgt.map(|w| w.parse::<f64>().unwrap()),
        Some(54_321_987_000.0)
    );
    assert_eq!((ref_date.as_str(), month), ("2012-01-01", 52));
    // A fraction survives: numeric, not float rounding.
    let fraction: String = sqlx::query_scalar(
        "SELECT primary_value::text FROM comtrade_flows WHERE period = '2014' AND reporter_code = 484",
    )
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!(fraction, "1234000000.25");
    let null_weights: i64 =
        sqlx::query_scalar("SELECT count(*) FROM comtrade_flows WHERE net_wgt IS NULL")
            .fetch_one(&fx.db)
            .await
            .unwrap();
    assert!(null_weights > 0, "a missing netWgt is NULL");

    let expected: BTreeSet<(String, String, i32)> = [
        (REPORTER, "2012", 6),
        (REPORTER, "2013", 4),
        (REPORTER, "2014", 0),
        (MIRROR, "2012", 6),
        (MIRROR, "2013", 5),
        (MIRROR, "2014", 4),
    ]
    .into_iter()
    .map(|(q, p, n)| (q.to_owned(), p.to_owned(), n))
    .collect();
    assert_eq!(
        loaded(&fx).await.into_iter().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(fx.cursor("comtrade", REPORTER).await, Some(json!("2013")));
    assert_eq!(fx.cursor("comtrade", MIRROR).await, Some(json!("2014")));
}

#[tokio::test]
async fn comtrade_second_run_skips_periods_already_loaded() {
    let fx = start("refresh-periods = 1").await;
    // The second run's window adds 2015. It asks for 2015 (new), and again for Venezuela's
    // 2014 (empty the first time); loaded periods are skipped.
    serve_2012_to_2014(&fx, [1, 1, 2, 1, 1, 1]).await;
    serve(&fx, Query::Reporter, "2015", "get_empty.json", 1).await;
    let mut mirror_2015 = fixture("get_mirror_ven_2014.json");
    for record in mirror_2015["data"].as_array_mut().unwrap() {
        record["period"] = json!("2015");
        record["refYear"] = json!(2015);
        record["refPeriodId"] = json!(20150101);
    }
    let mirror_2015 = ResponseTemplate::new(200).set_body_json(mirror_2015);
    answer(&fx, Query::Mirror, "2015", mirror_2015, 1).await;

    fx.run_ok("comtrade", window_2015()).await;
    let before = snapshot(&fx).await;
    let window_2016 = json!({"start": "2016-02-05T06:00:00Z", "end": "2016-03-05T06:00:00Z"});
    fx.run_ok("comtrade", window_2016).await;
    assert_eq!(fx.count("comtrade_flows").await, 29);
    let after = snapshot(&fx).await;
    assert!(
        before.iter().all(|row| after.contains(row)),
        "earlier rows untouched"
    );
    assert_eq!(fx.cursor("comtrade", MIRROR).await, Some(json!("2015")));
    // The `.expect(n)` of each mock is verified when the mock server drops.
}

#[tokio::test]
async fn comtrade_rerunning_the_same_window_adds_and_changes_nothing() {
    let fx = start("").await;
    // The two most recent periods are asked again (partners revise them); 2012 is not.
    serve_2012_to_2014(&fx, [1, 2, 2, 1, 2, 2]).await;

    fx.run_ok("comtrade", window_2015()).await;
    let before = snapshot(&fx).await;
    let loaded_before = loaded(&fx).await;
    let view = fx.run_ok("comtrade", window_2015()).await;
    assert_eq!(snapshot(&fx).await, before);
    assert_eq!(loaded(&fx).await, loaded_before);
    let output = view.output.expect("output");
    let changed: u64 = output
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["inserted"].as_u64().unwrap() + r["updated"].as_u64().unwrap())
        .sum();
    assert_eq!(changed, 0, "{output}");
}

#[tokio::test]
async fn comtrade_malformed_record_is_fatal_names_the_record_and_field_and_writes_nothing() {
    let fx = start("").await;
    serve_2012_to_2014(&fx, [1, 1, 1, 1, 0, 1]).await;
    let mut bad = fixture("get_mirror_ven_2013.json");
    bad["data"][1]["primaryValue"] = json!("13,200,000,000");
    answer(
        &fx,
        Query::Mirror,
        "2013",
        ResponseTemplate::new(200).set_body_json(bad),
        1,
    )
    .await;

    let view = fx.run("comtrade", window_2015()).await;
    assert_failed_with(
        &view,
        &format!("record {MIRROR} period 2013 data[1]: field primaryValue"),
    );
    // Nothing half-written.
    fx.assert_empty(&[
        "comtrade_flows",
        "comtrade_loaded_periods",
        "ingest_cursors",
    ])
    .await;
}

#[tokio::test]
async fn comtrade_error_in_a_200_answer_is_fatal_with_the_apis_words() {
    let fx = start("start-year = 2014").await;
    asked(Query::Reporter, "2014")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "elapsedTime": "0.01 secs", "count": 0, "data": null, "error": "Invalid cmdCode: TOTAL2"
        })))
        .mount(&fx.mock)
        .await;
    // The two queries are sibling map items: once one has failed the run, the other may
    // never be sent.
    asked(Query::Mirror, "2014")
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("get_mirror_ven_2014.json")))
        .expect(0..=1)
        .mount(&fx.mock)
        .await;
    let view = fx.run("comtrade", window_2015()).await;
    assert_failed_with(&view, "the API says: Invalid cmdCode: TOTAL2");
    // Nothing half-written.
    fx.assert_empty(&["comtrade_flows"]).await;
}

#[tokio::test]
async fn comtrade_html_where_json_was_expected_is_fatal_and_quoted() {
    let fx = start("start-year = 2014").await;
    // A sibling map item of the failing one: it may never be sent once the run has failed.
    asked(Query::Reporter, "2014")
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("get_empty.json")))
        .expect(0..=1)
        .mount(&fx.mock)
        .await;
    let html = ResponseTemplate::new(200).set_body_raw(
        "<html><head><title>Service Unavailable</title></head><body>Gateway maintenance</body></html>",
        "text/html",
    );
    answer(&fx, Query::Mirror, "2014", html, 1).await;
    let view = fx.run("comtrade", window_2015()).await;
    assert_failed_with(&view, "Gateway maintenance");
    assert_eq!(fx.count("comtrade_loaded_periods").await, 0);
}

#[tokio::test]
async fn comtrade_truncated_answer_is_fatal_and_asks_for_a_narrower_query() {
    let fx = start("start-year = 2014\nmax-records = 4").await;
    serve_2014(&fx).await;
    let view = fx.run("comtrade", window_2015()).await;
    assert_failed_with(&view, "truncated; narrow the query");
    assert_eq!(fx.count("comtrade_flows").await, 0);
}

#[tokio::test]
async fn comtrade_throttle_without_retry_after_is_retried_after_the_seconds_it_names() {
    let fx = start("start-year = 2014").await;
    // More 429s than the HTTP layer's own attempts: the step itself must fail retryably.
    let throttled = ResponseTemplate::new(429).set_body_json(fixture("429.json"));
    answer_first(&fx, Query::Mirror, "2014", throttled, 4).await;
    serve_2014(&fx).await;

    let view = fx.run_ok("comtrade", window_2015()).await;
    assert_eq!(fx.count("comtrade_flows").await, 4);
    let retries = retries(&view);
    assert!(
        retries.iter().any(|r| r.contains("Try again in 1 seconds")),
        "{retries:?}"
    );
}

#[tokio::test]
async fn comtrade_429_with_retry_after_and_a_5xx_are_retried_then_succeed() {
    let fx = start("start-year = 2014").await;
    let throttled = ResponseTemplate::new(429)
        .insert_header("Retry-After", "1")
        .set_body_json(fixture("429.json"));
    answer_first(&fx, Query::Reporter, "2014", throttled, 1).await;
    let gateway = ResponseTemplate::new(502).set_body_raw("", "text/html");
    answer_first(&fx, Query::Mirror, "2014", gateway, 2).await;
    serve_2014(&fx).await;

    fx.run_ok("comtrade", window_2015()).await;
    assert_eq!(fx.count("comtrade_flows").await, 4);
}

#[tokio::test]
async fn comtrade_spent_quota_is_retried_when_the_quota_is_replenished() {
    let fx = start("start-year = 2014").await;
    let spent = ResponseTemplate::new(403).set_body_json(fixture("403_quota.json"));
    answer_first(&fx, Query::Mirror, "2014", spent, 1).await;
    serve_2014(&fx).await;

    let view = fx.run_ok("comtrade", window_2015()).await;
    assert_eq!(fx.count("comtrade_flows").await, 4);
    let retries = retries(&view);
    assert!(
        retries
            .iter()
            .any(|r| r.contains("Quota will be replenished in 00:00:01")),
        "{retries:?}"
    );
}

#[tokio::test]
async fn comtrade_bad_subscription_key_is_fatal_with_the_apis_message_and_the_key_is_stored_nowhere()
 {
    let fx = start("start-year = 2014").await;
    Mock::given(path("/data/v1/get/C/A/HS"))
        .respond_with(ResponseTemplate::new(401).set_body_json(fixture("401.json")))
        .mount(&fx.mock)
        .await;
    let view = fx.run("comtrade", window_2015()).await;
    assert_failed_with(
        &view,
        "Access denied due to invalid subscription key. Make sure to provide a valid key",
    );
    assert_failed_with(&view, "subscription-key=***");
    assert_eq!(fx.mentions(KEY).await, 0, "the key leaked into PostgreSQL");
    assert_eq!(fx.count("comtrade_flows").await, 0);
}
