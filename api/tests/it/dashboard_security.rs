//! The dashboard session's defences, checked on every route: CSRF tokens on
//! every state-changing request made with the cookie, cookie attributes,
//! no login CSRF, no CORS.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn every_state_changing_route_needs_the_csrf_token_with_a_cookie() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let template = app.template(&key).await;
    let s = sign_in(&app, &key).await;
    let (_, other_key) = app.account(10).await;
    let other = sign_in(&app, &other_key).await;

    // Every POST, PUT, PATCH and DELETE of the OpenAPI document.
    let (_, doc) = send(app.client.get(format!("{}/openapi.json", app.url))).await;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if path == "/v1/session/sign-in" {
            continue; // no session yet: it takes the API key itself
        }
        let concrete = path
            .replace("{id}", &template.to_string())
            .replace("{job_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{prefix}", &key[..10]);
        for method in ["post", "put", "patch", "delete"] {
            if !ops[method].is_object() {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // No token, a wrong one, and another session's token.
            for token in [None, Some("wrong"), Some(other.csrf.as_str())] {
                let mut req = s
                    .req(&app, method.clone(), &concrete)
                    .json(&example_template());
                if let Some(token) = token {
                    req = req.header("x-csrf-token", token);
                }
                let got = send(req).await;
                assert_error(&got, 403, "csrf_failed");
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} state-changing routes found");

    // Nothing changed: the template and the key are still there.
    let (status, _) = send(app.req(Method::GET, &format!("/v1/templates/{template}"), &key)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(app.req(Method::GET, "/v1/account", &key)).await;
    assert_eq!(status, StatusCode::OK);
    // The session itself is still valid, and its token works.
    let (status, body) = send(
        s.req(&app, Method::DELETE, &format!("/v1/templates/{template}"))
            .header("x-csrf-token", &s.csrf),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn session_cookies_are_httponly_strict_and_secure_behind_https() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let s = sign_in(&app, &key).await;
    let attrs = attributes(&s.set_cookie);
    for want in ["httponly", "samesite=strict", "path=/"] {
        assert!(
            attrs.iter().any(|a| a == want),
            "{} lacks {want}",
            s.set_cookie
        );
    }
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "plain-http public_url: a Secure cookie would never come back"
    );
    // Behind a proxy that terminates HTTPS and says so, the cookie is
    // Secure even though public_url was left at its plain-HTTP default.
    let proxied = app
        .client
        .post(format!("{}/v1/session/sign-in", app.url))
        .header("x-forwarded-proto", "https")
        .json(&json!({"api_key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::OK);
    let set_cookie = proxied.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        attributes(&set_cookie).iter().any(|a| a == "secure"),
        "{set_cookie}"
    );
    // The cookie holds a random token, not the key or anything derived from it.
    let token = s.cookie.split_once('=').unwrap().1;
    assert!(token.len() >= 40 && !key.contains(token) && !token.contains(&key[3..10]));
    // Signing in again from the same browser ends the session it had.
    let again = sign_in_from(&app, &key, Some(&s.cookie)).await;
    assert_ne!(again.cookie, s.cookie);
    let (status, _) = send(s.req(&app, Method::GET, "/v1/session")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(again.req(&app, Method::GET, "/v1/session")).await;
    assert_eq!(status, StatusCode::OK);

    let https = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.public_url = "https://paperhook.example.com".into()
    })
    .await;
    let (_, key) = https.account(10).await;
    let s = sign_in(&https, &key).await;
    let attrs = attributes(&s.set_cookie);
    for want in ["httponly", "samesite=strict", "secure"] {
        assert!(
            attrs.iter().any(|a| a == want),
            "{} lacks {want}",
            s.set_cookie
        );
    }
    // Signing out clears it with the same attributes.
    let res = s
        .req(&https, Method::DELETE, "/v1/session")
        .header("x-csrf-token", &s.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let attrs = attributes(&cleared);
    assert!(cleared.starts_with("paperhook_session=;"), "{cleared}");
    for want in ["httponly", "secure", "max-age=0"] {
        assert!(attrs.iter().any(|a| a == want), "{cleared} lacks {want}");
    }
}

#[tokio::test]
async fn sign_in_cannot_be_forged_cross_site_and_no_origin_is_trusted() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    // A cross-site HTML form can only send form or text bodies (JSON would
    // need a CORS preflight): those are refused, so no one can sign a
    // browser in to the attacker's account.
    for (content_type, body) in [
        (
            "application/x-www-form-urlencoded",
            format!("api_key={key}"),
        ),
        ("text/plain", json!({"api_key": key}).to_string()),
        (
            "multipart/form-data; boundary=x",
            format!(
                "--x\r\ncontent-disposition: form-data; name=\"api_key\"\r\n\r\n{key}\r\n--x--\r\n"
            ),
        ),
    ] {
        let res = app
            .client
            .post(format!("{}/v1/session/sign-in", app.url))
            .header("content-type", content_type)
            .header("origin", "https://evil.example")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("set-cookie").is_none(), "{content_type}");
        assert_eq!(
            res.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
    }
    // No CORS: a preflight from another origin is not granted, and answers
    // carry no Access-Control-Allow-Origin.
    let res = app
        .client
        .request(Method::OPTIONS, format!("{}/v1/templates", app.url))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "x-csrf-token, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let res = app
        .req(Method::GET, "/v1/account", &key)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert!(
        res.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
}
