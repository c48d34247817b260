//! Property tests of request decoding against a live keyward: whatever the
//! body, the answer is a 4xx with our error body, never a 5xx or a 200.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::helpers::TestApp;

fn content_type() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("application/json"),
        Just("text/plain"),
        Just("application/octet-stream"),
        Just("")
    ]
}

#[test]
fn arbitrary_bodies_to_validate_key_get_a_4xx_with_an_error_body() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    let bodies = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        "\\PC{0,400}".prop_map(|key| serde_json::json!({ "api_key": key })
            .to_string()
            .into_bytes()),
        "sk-proj\\.[a-z.]{0,20}[A-Za-z0-9_.-]{0,80}"
            .prop_map(|key| format!(r#"{{"api_key":"{key}"}}"#).into_bytes()),
    ];
    runner
        .run(&(bodies, content_type()), |(body, content_type)| {
            let (status, text) = runtime.block_on(async {
                let r = app
                    .http
                    .post(app.url("/v1/validate-key"))
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap())
            });
            prop_assert!(status.is_client_error(), "{status}: {text}");
            prop_assert!(text.starts_with(r#"{"error":{"code":""#), "{text}");
            Ok(())
        })
        .unwrap();
}
