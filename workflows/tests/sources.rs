//! The ingestion plumbing shared by every source: cursors only move forward, settings errors
//! name the source.

mod support;

use support::SourceFixture;

#[tokio::test]
async fn a_cursor_only_moves_forward_and_settings_errors_name_the_source() {
    let fx = SourceFixture::start(|_| String::new()).await;
    let mut tx = fx.db.begin().await.unwrap();
    let ctx = tributary::workflow::StepContext::detached("t");
    for date in ["2024-03-01", "2024-05-01", "2024-04-01"] {
        tributary_workflows::sources::advance_cursor(&mut tx, &ctx, "test", "k", &date)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let value: Option<String> = tributary_workflows::sources::cursor(&fx.db, "test", "k")
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("2024-05-01"));

    let mut config = fx.env.config();
    config.sources.insert(
        "probe".into(),
        toml::from_str("limit = \"not a number\"").unwrap(),
    );
    #[derive(Debug, serde::Deserialize, Default)]
    #[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
    struct Probe {
        #[allow(dead_code)]
        limit: u32,
    }
    let err = config.source::<Probe>("probe").unwrap_err().to_string();
    assert!(
        err.contains("sources.probe") && err.contains("limit"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tributary_sources_shows_cursors_row_counts_and_the_last_successful_run() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};

    // The key comes from a secrets file, the development fallback.
    let dir = std::env::temp_dir().join(format!("tributary-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("fred-api-key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let secrets_dir = dir.display().to_string();
    let fx = SourceFixture::start(|uri| {
        format!(
            "[secrets]\nprovider = \"env\"\ndir = \"{secrets_dir}\"\n\
             [sources.fred]\nbase-url = \"{uri}/fred\"\nseries = [\"DCOILWTICO\"]\n"
        )
    })
    .await;
    Mock::given(method("GET"))
        .and(path("/fred/series/observations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "realtime_start": "2025-03-04", "realtime_end": "2025-03-04",
            "count": 2, "offset": 0, "limit": 100000,
            "observations": [
                {"realtime_start": "2025-03-04", "realtime_end": "2025-03-04", "date": "2025-03-03", "value": "68.2"},
                {"realtime_start": "2025-03-04", "realtime_end": "2025-03-04", "date": "2025-03-04", "value": "."}
            ]
        })))
        .mount(&fx.mock)
        .await;
    let view = fx
        .run(
            "fred",
            serde_json::json!({"start": "2025-03-01T00:00:00Z", "end": "2025-03-05T00:00:00Z"}),
        )
        .await;
    support::assert_succeeded(&view);

    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg("sources")
            .env("DATABASE_URL", fx.env.postgres.url())
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let fred: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("fred "))
        .take_while(|l| l.starts_with("fred ") || l.starts_with("  "))
        .collect();
    let fred = fred.join("\n");
    assert!(fred.contains("fred_observations 2"), "{text}");
    assert!(
        fred.contains("cursor DCOILWTICO") && fred.contains("\"2025-03-04\""),
        "{text}"
    );
    assert!(fred.contains(&format!("(run {})", view.run_id)), "{text}");
    assert!(
        text.contains("gdelt (workflow gdelt)") && text.contains("never advanced"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
