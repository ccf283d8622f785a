//! The `gdelt` workflow against a mock of data.gdeltproject.org: export zips built here with
//! the `zip` crate, rows laid out as the GDELT 2.0 Event Codebook says (61 tab-separated
//! columns, values modelled on the examples in the reference notes).

mod support;

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use support::{SourceFixture, answer, answer_first, assert_failed_with};
use tributary::store::RunView;
use tributary_workflows::sources::gdelt::{self, LOAD_ATTEMPTS};
use wiremock::{MockServer, ResponseTemplate};

/// Row 1 of the reference notes: the Venezuelan opposition demonstrates against the government
/// in Caracas (CAMEO 141). The template every test row is derived from.
const CARACAS_PROTEST: &str = "1234567001\t20250301\t202503\t2025\t2025.1644\tVENOPP\tVENEZUELA\tVEN\t\t\t\t\tOPP\t\t\tVENGOV\tVENEZUELA\tVEN\t\t\t\t\tGOV\t\t\t1\t141\t141\t14\t4\t-6.5\t10\t2\t10\t-4.12371134020619\t4\tCaracas, Distrito Federal, Venezuela\tVE\tVE25\t\t10.5\t-66.9167\t-1385498\t4\tCaracas, Distrito Federal, Venezuela\tVE\tVE25\t\t10.5\t-66.9167\t-1385498\t4\tCaracas, Distrito Federal, Venezuela\tVE\tVE25\t\t10.5\t-66.9167\t-1385498\t20250301143000\thttps://news.example.com/venezuela/protesta-caracas-0301";

const T1: &str = "20250301143000";
const T2: &str = "20250301144500";
const T3: &str = "20250301150000";

/// Column indexes (Event Codebook V2.0).
const ACTOR1: usize = 5;
const ACTOR2: usize = 15;
const ACTOR1_GEO: usize = 35;
const ACTOR2_GEO: usize = 43;
const ACTION_GEO: usize = 51;
const DATEADDED: usize = 59;
const SOURCEURL: usize = 60;

/// The 61 fields of one export line.
#[derive(Clone)]
struct Line(Vec<String>);

impl Line {
    /// The template with another GLOBALEVENTID, DATEADDED and source URL.
    fn new(id: u64, added: &str) -> Self {
        let mut f: Vec<String> = CARACAS_PROTEST.split('\t').map(str::to_owned).collect();
        assert_eq!(f.len(), 61, "the template has 61 columns");
        f[0] = id.to_string();
        f[DATEADDED] = added.to_owned();
        f[SOURCEURL] = format!("https://news.example.com/2025/03/01/event-{id}");
        Self(f)
    }

    fn set(mut self, index: usize, value: &str) -> Self {
        self.0[index] = value.to_owned();
        self
    }

    /// Actor code, name and CAMEO country starting at `base` (ACTOR1 or ACTOR2).
    fn actor(self, base: usize, code: &str, name: &str, country: &str) -> Self {
        self.set(base, code)
            .set(base + 1, name)
            .set(base + 2, country)
            .set(base + 7, "")
    }

    /// A place starting at `base` (one of the *_GEO indexes): geo type, full name, country
    /// code, ADM1 code, (no ADM2 code), latitude, longitude, feature id.
    fn place(self, base: usize, fields: [&str; 7]) -> Self {
        let [kind, name, fips, adm1, lat, long, feature] = fields;
        self.set(base, kind)
            .set(base + 1, name)
            .set(base + 2, fips)
            .set(base + 3, adm1)
            .set(base + 4, "")
            .set(base + 5, lat)
            .set(base + 6, long)
            .set(base + 7, feature)
    }

    /// A country-level place (geo type 1) starting at `base`.
    fn country(self, base: usize, name: &str, fips: &str, lat: &str, long: &str) -> Self {
        self.place(base, ["1", name, fips, fips, lat, long, fips])
    }

    /// A city (geo type 4) starting at `base`.
    fn city(self, base: usize, name: &str, fips: &str, adm1: &str, lat: &str, long: &str) -> Self {
        self.place(base, ["4", name, fips, adm1, lat, long, "-1234567"])
    }

    /// `f` applied at each of the place indexes `bases`.
    fn at(self, bases: &[usize], f: impl Fn(Self, usize) -> Self) -> Self {
        bases.iter().fold(self, |line, &base| f(line, base))
    }

    /// `f` applied at all three places: both actors' and the action's.
    fn everywhere(self, f: impl Fn(Self, usize) -> Self) -> Self {
        self.at(&[ACTOR1_GEO, ACTOR2_GEO, ACTION_GEO], f)
    }

    fn tsv(&self) -> String {
        self.0.join("\t")
    }
}

/// A file of six events, four of them about Venezuela (ids 1, 2, 4 and 6).
fn mixed_batch(added: &str) -> Vec<Line> {
    let us = |l: Line, b| l.country(b, "United States", "US", "39.828175", "-98.5795");
    vec![
        // Venezuelan actors in Caracas.
        Line::new(1, added),
        // The US sanctions Venezuela, geocoded to the US only: kept for its actor.
        Line::new(2, added)
            .actor(ACTOR1, "USA", "UNITED STATES", "USA")
            .actor(ACTOR2, "VEN", "VENEZUELA", "VEN")
            .set(26, "163")
            .set(27, "163")
            .set(28, "16")
            .everywhere(us),
        // The US and China, in the US: dropped.
        Line::new(3, added)
            .actor(ACTOR1, "USA", "UNITED STATES", "USA")
            .actor(ACTOR2, "CHN", "CHINA", "CHN")
            .everywhere(us),
        // The Colombian army at the border, acting in Táchira: kept for its place.
        Line::new(4, added)
            .actor(ACTOR1, "COLMIL", "COLOMBIA", "COL")
            .actor(ACTOR2, "", "", "")
            .country(ACTOR1_GEO, "Colombia", "CO", "4", "-72")
            .at(&[ACTOR2_GEO, ACTION_GEO], |l, b| {
                let name = "San Antonio del Tachira, Tachira, Venezuela";
                l.city(b, name, "VE", "VE20", "7.81454", "-72.4431")
            }),
        // Valencia, Spain: a Venezuelan city name elsewhere, dropped.
        Line::new(5, added)
            .actor(ACTOR1, "ESP", "SPAIN", "ESP")
            .actor(ACTOR2, "ESPGOV", "SPAIN", "ESP")
            .everywhere(|l, b| {
                l.city(
                    b,
                    "Valencia, Comunidad Valenciana, Spain",
                    "SP",
                    "SP60",
                    "39.4667",
                    "-0.3667",
                )
            }),
        // Brazil, with its second actor placed in Venezuela: kept for that place.
        Line::new(6, added)
            .actor(ACTOR1, "BRA", "BRAZIL", "BRA")
            .actor(ACTOR2, "", "", "")
            .country(ACTOR1_GEO, "Brazil", "BR", "-10", "-55")
            .country(ACTOR2_GEO, "Venezuela", "VE", "8", "-66")
            .country(ACTION_GEO, "Brazil", "BR", "-10", "-55"),
    ]
}

/// A zip holding `<stamp>.export.CSV` with these lines, as GDELT publishes it.
fn export_zip(stamp: &str, lines: &[Line]) -> Vec<u8> {
    let body: String = lines.iter().map(|l| l.tsv() + "\n").collect();
    zip_of(&format!("{stamp}.export.CSV"), body.as_bytes())
}

fn zip_of(member: &str, body: &[u8]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    writer.start_file(member, options).unwrap();
    writer.write_all(body).unwrap();
    writer.finish().unwrap().into_inner()
}

/// `lastupdate.txt` naming the batch `stamp` (with GDELT's real host, as the live file does).
fn lastupdate(stamp: &str) -> String {
    format!(
        "150383 297a16b493de7cf6ca809a7cc31d0b93 http://data.gdeltproject.org/gdeltv2/{stamp}.export.CSV.zip\n\
         318084 bb27f78ba45f69a17ea6ed7755e9f8ff http://data.gdeltproject.org/gdeltv2/{stamp}.mentions.CSV.zip\n\
         10768507 ea8dde0beb0ba98810a92db068c0ce99 http://data.gdeltproject.org/gdeltv2/{stamp}.gkg.csv.zip\n"
    )
}

fn zip_path(stamp: &str) -> String {
    format!("/gdeltv2/{stamp}.export.CSV.zip")
}

fn time(stamp: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S")
        .unwrap()
        .and_utc()
}

async fn start() -> SourceFixture {
    SourceFixture::start(|uri| {
        format!("[sources.gdelt]\nbase-url = \"{uri}/gdeltv2\"\nretry-delay = \"50ms\"\n")
    })
    .await
}

const LASTUPDATE: &str = "/gdeltv2/lastupdate.txt";

async fn serve_zip(mock: &MockServer, stamp: &str, zip: Vec<u8>, times: u64) {
    let response = ResponseTemplate::new(200).set_body_raw(zip, "application/zip");
    answer(mock, &zip_path(stamp), response, times).await;
}

/// `lastupdate.txt` naming `stamp`.
fn lastupdate_of(stamp: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(lastupdate(stamp), "text/plain")
}

/// Serves `lastupdate.txt` naming `stamp`, however often it is asked.
async fn serve_lastupdate(mock: &MockServer, stamp: &str) {
    wiremock::Mock::given(wiremock::matchers::path(LASTUPDATE))
        .respond_with(lastupdate_of(stamp))
        .mount(mock)
        .await;
}

/// Runs `gdelt` over `[start, end)` expecting it to fail with `error` and to have stored
/// no event.
async fn assert_fails_with(fx: &SourceFixture, start: &str, end: &str, error: &str) -> RunView {
    let view = fx.run("gdelt", window(start, end)).await;
    assert_failed_with(&view, error);
    assert_eq!(fx.count("gdelt_events").await, 0);
    view
}

fn window(start: &str, end: &str) -> Value {
    json!({ "start": time(start), "end": time(end) })
}

fn report(view: &RunView) -> Value {
    view.output.clone().expect("a succeeded run has an output")
}

async fn ids(fx: &SourceFixture) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_event_id FROM gdelt_events ORDER BY 1")
        .fetch_all(&fx.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn gdelt_keeps_only_the_venezuelan_rows_of_the_newest_batch_in_lastupdate() {
    let fx = start().await;
    serve_lastupdate(&fx.mock, T1).await;
    serve_zip(&fx.mock, T1, export_zip(T1, &mixed_batch(T1)), 1).await;

    let view = fx.run_ok("gdelt", json!({})).await;
    let out = report(&view);
    assert_eq!(
        (
            &out["loaded"],
            &out["skipped"],
            &out["rows_in_files"],
            &out["rows_kept"]
        ),
        (&json!(1), &json!(0), &json!(6), &json!(4)),
        "{out}"
    );
    assert_eq!(ids(&fx).await, vec![1, 2, 4, 6]);

    let batch = sqlx::query(
        "SELECT status, rows_in_file, rows_kept, reason, url FROM gdelt_batches WHERE batch_at = $1",
    )
    .bind(time(T1))
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!(batch.get::<String, _>("status"), "loaded");
    assert_eq!(batch.get::<i32, _>("rows_in_file"), 6);
    assert_eq!(batch.get::<i32, _>("rows_kept"), 4);
    assert_eq!(batch.get::<Option<String>, _>("reason"), None);
    assert!(batch.get::<String, _>("url").ends_with(&zip_path(T1)));
    assert_eq!(fx.cursor("gdelt", "export").await, Some(json!(T1)));

    // The protest row, typed.
    let row = sqlx::query("SELECT * FROM gdelt_events WHERE global_event_id = 1")
        .fetch_one(&fx.db)
        .await
        .unwrap();
    assert_eq!(
        row.get::<NaiveDate, _>("event_date"),
        NaiveDate::from_ymd_opt(2025, 3, 1).unwrap()
    );
    assert_eq!(row.get::<DateTime<Utc>, _>("date_added"), time(T1));
    assert_eq!(row.get::<DateTime<Utc>, _>("batch_at"), time(T1));
    assert_eq!(
        row.get::<Option<String>, _>("actor1_code").as_deref(),
        Some("VENOPP")
    );
    assert_eq!(
        row.get::<Option<String>, _>("event_code").as_deref(),
        Some("141")
    );
    assert_eq!(
        row.get::<Option<String>, _>("event_root_code").as_deref(),
        Some("14")
    );
    assert_eq!(row.get::<Option<i16>, _>("quad_class"), Some(4));
    assert_eq!(row.get::<Option<bool>, _>("is_root_event"), Some(true));
    assert_eq!(row.get::<Option<f64>, _>("goldstein_scale"), Some(-6.5));
    assert_eq!(
        row.get::<Option<f64>, _>("avg_tone"),
        Some(-4.12371134020619)
    );
    assert_eq!(row.get::<Option<i32>, _>("num_articles"), Some(10));
    assert_eq!(row.get::<Option<f64>, _>("action_geo_lat"), Some(10.5));
    assert_eq!(row.get::<Option<f64>, _>("action_geo_long"), Some(-66.9167));
    assert_eq!(
        row.get::<Option<String>, _>("action_geo_adm1_code")
            .as_deref(),
        Some("VE25")
    );
    assert_eq!(
        row.get::<Option<String>, _>("source_url").as_deref(),
        Some("https://news.example.com/2025/03/01/event-1")
    );

    // Nothing newer is listed: the next run has nothing to do and downloads nothing.
    let view = fx.run_ok("gdelt", json!({})).await;
    assert_eq!(report(&view)["batches"], json!(0));
    fx.mock.verify().await;
}

#[tokio::test]
async fn gdelt_a_run_without_a_window_continues_after_the_cursor() {
    let fx = start().await;
    answer_first(&fx.mock, LASTUPDATE, lastupdate_of(T1), 1).await;
    serve_lastupdate(&fx.mock, T3).await;
    for stamp in [T1, T2, T3] {
        let lines = vec![Line::new(stamp[8..12].parse().unwrap(), stamp)];
        serve_zip(&fx.mock, stamp, export_zip(stamp, &lines), 1).await;
    }

    fx.run_ok("gdelt", json!({})).await;
    assert_eq!(fx.cursor("gdelt", "export").await, Some(json!(T1)));

    // lastupdate.txt has moved on by two batches: both are loaded, the first one not again.
    let view = fx.run_ok("gdelt", json!({})).await;
    assert_eq!(report(&view)["loaded"], json!(2));
    assert_eq!(ids(&fx).await, vec![1430, 1445, 1500]);
    assert_eq!(fx.cursor("gdelt", "export").await, Some(json!(T3)));
    fx.mock.verify().await;
}

#[tokio::test]
async fn gdelt_a_window_of_two_batches_loads_both_and_rerunning_it_changes_nothing() {
    let fx = start().await;
    let second: Vec<Line> = vec![
        Line::new(11, T2),
        Line::new(12, T2)
            .actor(ACTOR1, "USA", "UNITED STATES", "USA")
            .actor(ACTOR2, "CAN", "CANADA", "CAN")
            .everywhere(|l, b| l.country(b, "Canada", "CA", "60", "-95")),
    ];
    serve_zip(&fx.mock, T1, export_zip(T1, &mixed_batch(T1)), 2).await;
    serve_zip(&fx.mock, T2, export_zip(T2, &second), 2).await;
    // [14:30, 15:00) holds the batches of 14:30 and 14:45, not the one of 15:00.
    let input = window(T1, T3);

    let view = fx.run_ok("gdelt", input.clone()).await;
    let out = report(&view);
    assert_eq!(out["batches"], json!(2), "{out}");
    assert_eq!(out["rows_written"], json!(5), "{out}");
    assert_eq!(ids(&fx).await, vec![1, 2, 4, 6, 11]);
    assert_eq!(fx.count("gdelt_batches").await, 2);

    // A batch's key includes its loaded_at: reloading it would show.
    let stamps = || async {
        let events = fx.snapshot("gdelt_events", "global_event_id").await;
        (
            events,
            fx.snapshot("gdelt_batches", "batch_at, loaded_at").await,
        )
    };
    let before = stamps().await;

    let view = fx.run_ok("gdelt", input).await;
    let out = report(&view);
    assert_eq!(
        (&out["loaded"], &out["rows_kept"], &out["rows_written"]),
        (&json!(2), &json!(5), &json!(0)),
        "{out}"
    );
    assert_eq!(fx.count("gdelt_events").await, 5);
    assert_eq!(fx.count("gdelt_batches").await, 2);
    assert_eq!(stamps().await, before, "no row was touched");
    assert_eq!(fx.cursor("gdelt", "export").await, Some(json!(T2)));
    fx.mock.verify().await;
}

#[tokio::test]
async fn gdelt_a_late_batch_is_retried_and_a_missing_one_is_recorded_as_skipped() {
    let fx = start().await;
    // 14:30 never appears; 14:45 appears on the third attempt.
    let not_found = || ResponseTemplate::new(404).set_body_string("Not Found");
    answer(
        &fx.mock,
        &zip_path(T1),
        not_found(),
        u64::from(LOAD_ATTEMPTS),
    )
    .await;
    answer_first(&fx.mock, &zip_path(T2), not_found(), 2).await;
    serve_zip(&fx.mock, T2, export_zip(T2, &[Line::new(21, T2)]), 1).await;

    let view = fx.run_ok("gdelt", window(T1, T3)).await;
    let out = report(&view);
    assert_eq!(
        (&out["loaded"], &out["skipped"]),
        (&json!(1), &json!(1)),
        "{out}"
    );
    let attempts: Vec<(String, u32)> = view
        .steps
        .iter()
        .filter(|s| s.step.starts_with("load["))
        .map(|s| (s.step.clone(), s.attempt))
        .collect();
    assert!(
        attempts.contains(&("load[0]".into(), LOAD_ATTEMPTS))
            && attempts.contains(&("load[1]".into(), 3)),
        "{attempts:?}"
    );

    let (status, reason, rows_in_file): (String, Option<String>, Option<i32>) = sqlx::query_as(
        "SELECT status, reason, rows_in_file FROM gdelt_batches WHERE batch_at = $1",
    )
    .bind(time(T1))
    .fetch_one(&fx.db)
    .await
    .unwrap();
    assert_eq!((status.as_str(), rows_in_file), ("skipped", None));
    let reason = reason.expect("a skipped batch says why");
    assert!(
        reason.contains("HTTP 404") && reason.contains(&format!("{LOAD_ATTEMPTS} attempts")),
        "{reason}"
    );
    assert_eq!(ids(&fx).await, vec![21]);
    assert_eq!(fx.cursor("gdelt", "export").await, Some(json!(T2)));
    fx.mock.verify().await;

    // GDELT publishes the missing file after all: a backfill of its window loads it.
    fx.mock.reset().await;
    serve_zip(&fx.mock, T1, export_zip(T1, &[Line::new(20, T1)]), 1).await;
    fx.run_ok("gdelt", window(T1, T2)).await;
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, reason FROM gdelt_batches WHERE batch_at = $1")
            .bind(time(T1))
            .fetch_one(&fx.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), reason), ("loaded", None));
    assert_eq!(ids(&fx).await, vec![20, 21]);
    fx.mock.verify().await;
}

#[tokio::test]
async fn gdelt_a_corrupt_zip_fails_the_run_naming_the_batch_and_writes_nothing() {
    let fx = start().await;
    let html = ResponseTemplate::new(200).set_body_raw(
        "<html><body><h1>Service Unavailable</h1></body></html>",
        "text/html",
    );
    answer(&fx.mock, &zip_path(T1), html, 1).await;

    let not_a_zip = format!("gdelt: record batch {T1}: field zip: not a readable zip");
    let view = assert_fails_with(&fx, T1, T2, &not_a_zip).await;
    assert_failed_with(&view, "Service Unavailable");
    assert_eq!(fx.count("gdelt_batches").await, 0);
    assert_eq!(fx.cursor("gdelt", "export").await, None);
    fx.mock.verify().await;
}

#[tokio::test]
async fn gdelt_a_file_with_many_rows_of_60_columns_fails_naming_the_line_and_writes_nothing() {
    let fx = start().await;
    let mut lines = mixed_batch(T1);
    lines[2].0.pop(); // line 3 loses SOURCEURL
    serve_zip(&fx.mock, T1, export_zip(T1, &lines), 1).await;

    // Lines 1 and 2 are not written either.
    let error = format!(
        "gdelt: record batch {T1} line 3: field columns: 60 columns, expected 61 \
         (1 of 6 lines malformed: more than 1%, a change of layout?)"
    );
    assert_fails_with(&fx, T1, T2, &error).await;
    assert_eq!(fx.count("gdelt_batches").await, 0);
    fx.mock.verify().await;
}

#[tokio::test]
async fn gdelt_a_rare_truncated_row_is_skipped_and_counted_and_the_rest_of_the_batch_loads() {
    let fx = start().await;
    // 200 lines about Venezuela, one of them truncated: 0.5%, GDELT's usual noise.
    let mut lines: Vec<Line> = (1..=200).map(|id| Line::new(id, T1)).collect();
    lines[99].0.truncate(40);
    serve_zip(&fx.mock, T1, export_zip(T1, &lines), 1).await;

    fx.run_ok("gdelt", window(T1, T2)).await;
    assert_eq!(fx.count("gdelt_events").await, 199);
    let (in_file, skipped): (i32, i32) =
        sqlx::query_as("SELECT rows_in_file, rows_skipped FROM gdelt_batches WHERE batch_at = $1")
            .bind(time(T1))
            .fetch_one(&fx.db)
            .await
            .unwrap();
    assert_eq!((in_file, skipped), (200, 1));
    assert!(
        !ids(&fx).await.contains(&100),
        "the truncated row is not stored"
    );
}

#[tokio::test]
async fn gdelt_a_value_that_does_not_parse_names_the_line_and_the_column() {
    let fx = start().await;
    let lines = vec![Line::new(1, T1), Line::new(2, T1).set(30, "minus six")];
    serve_zip(&fx.mock, T1, export_zip(T1, &lines), 1).await;

    let error = format!("gdelt: record batch {T1} line 2 (GLOBALEVENTID 2): field GoldsteinScale");
    assert_fails_with(&fx, T1, T2, &error).await;
}

#[tokio::test]
async fn gdelt_stores_empty_fields_as_null() {
    let fx = start().await;
    // A verbal event of a Venezuelan actor with no second actor, no place for the first actor,
    // no scores and no source URL; its CAMEO code keeps its leading zero.
    let sparse = Line::new(7, T1)
        .actor(ACTOR2, "", "", "")
        .set(ACTOR2 + 7, "")
        .set(12, "")
        .set(25, "")
        .set(26, "043")
        .set(27, "043")
        .set(28, "04")
        .set(29, "1")
        .set(30, "")
        .set(34, "")
        .set(ACTOR1_GEO, "")
        .set(ACTOR1_GEO + 1, "")
        .set(ACTOR1_GEO + 2, "")
        .set(ACTOR1_GEO + 3, "")
        .set(ACTOR1_GEO + 5, "")
        .set(ACTOR1_GEO + 6, "")
        .set(ACTOR1_GEO + 7, "")
        .set(SOURCEURL, "");
    serve_zip(&fx.mock, T1, export_zip(T1, &[sparse]), 1).await;

    fx.run_ok("gdelt", window(T1, T2)).await;
    let row = sqlx::query("SELECT * FROM gdelt_events WHERE global_event_id = 7")
        .fetch_one(&fx.db)
        .await
        .unwrap();
    for column in [
        "actor2_code",
        "actor2_name",
        "actor2_country_code",
        "actor1_type1_code",
        "actor1_geo_full_name",
        "actor1_geo_country_code",
        "actor1_geo_feature_id",
        "source_url",
    ] {
        assert_eq!(row.get::<Option<String>, _>(column), None, "{column}");
    }
    for column in [
        "goldstein_scale",
        "avg_tone",
        "actor1_geo_lat",
        "actor1_geo_long",
    ] {
        assert_eq!(row.get::<Option<f64>, _>(column), None, "{column}");
    }
    assert_eq!(row.get::<Option<i16>, _>("actor1_geo_type"), None);
    assert_eq!(row.get::<Option<bool>, _>("is_root_event"), None);
    assert_eq!(
        row.get::<Option<String>, _>("event_code").as_deref(),
        Some("043")
    );
    assert_eq!(
        row.get::<Option<String>, _>("event_root_code").as_deref(),
        Some("04")
    );
    assert_eq!(row.get::<Option<f64>, _>("action_geo_lat"), Some(10.5));
}

#[tokio::test]
async fn gdelt_a_429_and_5xx_are_retried_then_the_batch_loads() {
    let fx = start().await;
    let throttled = ResponseTemplate::new(429)
        .insert_header("Retry-After", "1")
        .set_body_string("Too Many Requests");
    answer_first(&fx.mock, LASTUPDATE, throttled, 1).await;
    serve_lastupdate(&fx.mock, T1).await;
    let unavailable = ResponseTemplate::new(503).set_body_string("Service Unavailable");
    answer_first(&fx.mock, &zip_path(T1), unavailable, 2).await;
    serve_zip(&fx.mock, T1, export_zip(T1, &mixed_batch(T1)), 1).await;

    fx.run_ok("gdelt", json!({})).await;
    assert_eq!(ids(&fx).await, vec![1, 2, 4, 6]);
    fx.mock.verify().await;
}

#[tokio::test]
async fn gdelt_an_html_page_instead_of_lastupdate_fails_the_run_quoting_it() {
    let fx = start().await;
    let html = ResponseTemplate::new(200).set_body_raw(
        "<html><head><title>Proxy Authentication Required</title></head></html>",
        "text/html",
    );
    wiremock::Mock::given(wiremock::matchers::path(LASTUPDATE))
        .respond_with(html)
        .mount(&fx.mock)
        .await;

    let view = fx.run("gdelt", json!({})).await;
    assert_failed_with(&view, "gdelt: record lastupdate.txt: field export url");
    assert_failed_with(&view, "Proxy Authentication Required");
    assert_eq!(fx.count("gdelt_batches").await, 0);
}

#[test]
fn gdelt_settings_with_an_unknown_key_are_refused_naming_it() {
    let mut config = tributary::config::Config::default();
    config.sources.insert(
        "gdelt".into(),
        toml::from_str(
            "base-url = \"https://data.gdeltproject.org/gdeltv2\"\nretry-dealy = \"1m\"",
        )
        .unwrap(),
    );
    let err = config
        .source::<gdelt::Settings>("gdelt")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources.gdelt") && err.contains("retry-dealy"),
        "{err}"
    );
}
