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
