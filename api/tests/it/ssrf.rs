//! The SSRF guard where templates are saved: webhook URLs whose host is an
//! address webhooks may not reach are refused in every spelling; names are
//! left to the worker, which resolves them at each delivery.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// Private, loopback, link-local and reserved targets, spelled every way
/// the url crate accepts, with the address it turns each into.
const REFUSED: &[(&str, &str)] = &[
    ("http://127.0.0.1/hook", "127.0.0.1"),
    ("http://2130706433/hook", "127.0.0.1"),
    ("http://0177.0.0.1/hook", "127.0.0.1"),
    ("http://0x7f.1/hook", "127.0.0.1"),
    ("http://0x7f000001/hook", "127.0.0.1"),
    ("http://017700000001/hook", "127.0.0.1"),
    ("http://127.1/hook", "127.0.0.1"),
    ("http://0/hook", "0.0.0.0"),
    ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
    ("http://2852039166/", "169.254.169.254"),
    ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
    ("http://10.0.0.1/", "10.0.0.1"),
    ("http://012.0.0.1/", "10.0.0.1"),
    ("http://192.168.1.1:8080/", "192.168.1.1"),
    ("http://100.64.0.1/", "100.64.0.1"),
    ("https://[::1]/hook", "[::1]"),
    ("http://[0:0:0:0:0:0:0:1]/", "[::1]"),
    ("http://[::]/", "[::]"),
    ("http://[::ffff:127.0.0.1]/", "[::ffff:7f00:1]"),
    ("http://[::ffff:7f00:1]/", "[::ffff:7f00:1]"),
    ("http://[::ffff:169.254.169.254]/", "[::ffff:a9fe:a9fe]"),
    ("http://[::127.0.0.1]/", "[::7f00:1]"),
    ("http://[64:ff9b::10.0.0.1]/", "[64:ff9b::a00:1]"),
    ("http://[2002:7f00:1::]/", "[2002:7f00:1::]"),
    ("http://[fc00::1]/", "[fc00::1]"),
    ("http://[fd12:3456::1]/", "[fd12:3456::1]"),
    ("http://[fd00:ec2::254]/", "[fd00:ec2::254]"),
    ("http://[fe80::1]/", "[fe80::1]"),
];

#[test]
fn the_url_crate_normalises_every_ip_spelling() {
    for (url, host) in REFUSED {
        let parsed = url::Url::parse(url).unwrap();
        assert_eq!(parsed.host_str(), Some(*host), "{url}");
    }
    // Zone ids are not URLs at all.
    assert!(url::Url::parse("http://[fe80::1%25eth0]/").is_err());
}

#[tokio::test]
async fn templates_refuse_private_addresses_in_every_spelling() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let id = app.template(&key).await;
    for (url, _) in REFUSED {
        let mut t = example_template();
        t["webhook"]["url"] = json!(url);
        let got = send(app.req(Method::POST, "/v1/templates", &key).json(&t)).await;
        assert_error(&got, 422, "invalid_webhook");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("webhook_allow_cidrs"), "{url}: {message}");
        let got = send(
            app.req(Method::PUT, &format!("/v1/templates/{id}"), &key)
                .json(&t),
        )
        .await;
        assert_error(&got, 422, "invalid_webhook");
    }
    // The stored webhook is unchanged by the refused updates.
    let (_, saved) = send(app.req(Method::GET, &format!("/v1/templates/{id}"), &key)).await;
    assert_eq!(
        saved["webhook"]["url"],
        example_template()["webhook"]["url"]
    );
    // Names are the worker's to resolve and check at delivery time.
    let mut t = example_template();
    t["webhook"]["url"] = json!("http://localhost:9/hook");
    let (s, body) = send(app.req(Method::POST, "/v1/templates", &key).json(&t)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, out) = send(app.req(
        Method::POST,
        &format!(
            "/v1/templates/{}/webhook-test",
            body["id"].as_str().unwrap()
        ),
        &key,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["error_class"], "refused", "{out}");
    assert!(out["status_code"].is_null());
}

#[tokio::test]
async fn the_allow_list_admits_its_networks_in_any_spelling() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.webhook_allow_cidrs = "127.0.0.0/8, 10.0.0.0/8".into()
    })
    .await;
    let (_, key) = app.account(10).await;
    for url in [
        "http://2130706433/hook",
        "http://0x7f.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://012.0.0.1/",
    ] {
        let mut t = example_template();
        t["webhook"]["url"] = json!(url);
        let (s, body) = send(app.req(Method::POST, "/v1/templates", &key).json(&t)).await;
        assert_eq!(s, StatusCode::CREATED, "{url}: {body}");
    }
    // What the list does not cover is still refused.
    for url in [
        "http://[::1]/",
        "http://169.254.169.254/",
        "http://192.168.0.1/",
    ] {
        let mut t = example_template();
        t["webhook"]["url"] = json!(url);
        let got = send(app.req(Method::POST, "/v1/templates", &key).json(&t)).await;
        assert_error(&got, 422, "invalid_webhook");
    }
}
