//! Dashboard sessions (cookie + CSRF), the pages it is served from, and the
//! API endpoints it uses: API keys, job views, previews.

use paperhook_core::testing::keys_in_order;
use reqwest::{Method, StatusCode, multipart};
use serde_json::json;

use crate::helpers::*;

/// Signs in and checks the cookie's attributes on the way.
async fn sign_in(app: &TestApp, key: &str) -> Session {
    let session = crate::helpers::sign_in(app, key).await;
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            session.set_cookie.contains(attr),
            "{} lacks {attr}",
            session.set_cookie
        );
    }
    assert!(
        !session.set_cookie.contains(key),
        "the cookie must not carry the API key"
    );
    session
}

#[tokio::test]
async fn sessions_need_csrf_for_changes_and_end_with_the_key() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let got = send(
        app.client
            .post(format!("{}/v1/session/sign-in", app.url))
            .json(&json!({"api_key": "ph_nope123_bad"})),
    )
    .await;
    assert_error(&got, 401, "unauthorized");

    let b = sign_in(&app, &key).await;
    let (s, me) = send(b.req(&app, Method::GET, "/v1/session")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["credits"], 10);
    // Reads work with the cookie alone; changes need the CSRF token.
    let (s, _) = send(b.req(&app, Method::GET, "/v1/templates")).await;
    assert_eq!(s, StatusCode::OK);
    let got = send(
        b.req(&app, Method::POST, "/v1/templates")
            .json(&example_template()),
    )
    .await;
    assert_error(&got, 403, "csrf_failed");
    let got = send(
        b.req(&app, Method::POST, "/v1/templates")
            .header("x-csrf-token", "wrong")
            .json(&example_template()),
    )
    .await;
    assert_error(&got, 403, "csrf_failed");
    let (s, _) = send(
        b.req(&app, Method::POST, "/v1/templates")
            .header("x-csrf-token", &b.csrf)
            .json(&example_template()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    // Revoking the key ends its sessions.
    paperhook_core::db::accounts::revoke_key(&app.pool, &key[..10], None)
        .await
        .unwrap();
    assert_error(
        &send(b.req(&app, Method::GET, "/v1/session")).await,
        401,
        "unauthorized",
    );

    // Signing out ends the session.
    let (_, key2) = app.account(1).await;
    let b = sign_in(&app, &key2).await;
    let res = b
        .req(&app, Method::DELETE, "/v1/session")
        .header("x-csrf-token", &b.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_error(
        &send(b.req(&app, Method::GET, "/v1/session")).await,
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn dashboard_assets_are_served_with_a_strict_policy() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(format!("{}/dashboard", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(res.text().await.unwrap().contains("/dashboard/app.js"));
    for (path, ct) in [
        ("/dashboard/app.js", "javascript"),
        ("/dashboard/app.css", "css"),
        ("/dashboard/templates/x", "html"),
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(
            res.headers()["content-type"].to_str().unwrap().contains(ct),
            "{path}"
        );
    }
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "/dashboard");
}

#[tokio::test]
async fn api_keys_can_be_created_listed_and_revoked() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let (_, other) = app.account(10).await;
    let (s, created) = send(app.req(Method::POST, "/v1/api-keys", &key)).await;
    assert_eq!(s, StatusCode::CREATED);
    let new_key = created["api_key"].as_str().unwrap().to_owned();
    let (_, list) = send(app.req(Method::GET, "/v1/api-keys", &key)).await;
    let prefixes: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes.len(), 2);
    assert!(prefixes.contains(&&new_key[..10]));
    assert!(
        !list.to_string().contains(&new_key),
        "listing must not show whole keys"
    );
    // Another account cannot revoke it.
    let got = send(app.req(
        Method::POST,
        &format!("/v1/api-keys/{}/revoke", &new_key[..10]),
        &other,
    ))
    .await;
    assert_error(&got, 404, "api_key_not_found");
    let res = app
        .req(
            Method::POST,
            &format!("/v1/api-keys/{}/revoke", &new_key[..10]),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_error(
        &send(app.req(Method::GET, "/v1/account", &new_key)).await,
        401,
        "unauthorized",
    );
    let (s, _) = send(app.req(Method::GET, "/v1/account", &key)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn job_views_list_filter_and_isolate() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(100).await;
    let (_, other) = app.account(100).await;
    let template = app.template(&key).await;
    let submit = || async {
        let form = multipart::Form::new()
            .text("template_id", template.to_string())
            .part(
                "actual_image",
                multipart::Part::bytes(example_pdf().to_vec()).file_name("inv.pdf"),
            );
        let (_, b) = send(app.req(Method::POST, "/process-job", &key).multipart(form)).await;
        b["job_id"].as_str().unwrap().to_owned()
    };
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(submit().await);
    }
    let (s, list) = send(app.req(Method::GET, "/v1/jobs?limit=2", &key)).await;
    assert_eq!(s, StatusCode::OK);
    let got: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        vec![ids[2].as_str(), ids[1].as_str()],
        "newest first, paged"
    );
    let (_, list) = send(app.req(Method::GET, "/v1/jobs?status=NEW", &key)).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 3);
    let (_, list) = send(app.req(Method::GET, "/v1/jobs?status=SUCCESS", &key)).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
    assert_error(
        &send(app.req(Method::GET, "/v1/jobs?status=DONE", &key)).await,
        422,
        "invalid_status",
    );
    let (_, list) = send(app.req(Method::GET, "/v1/jobs?limit=2&offset=2", &key)).await;
    assert_eq!(list["jobs"][0]["job_id"], ids[0].as_str(), "the next page");
    // By cursor: a job that arrives between two pages moves nothing (an
    // offset of 2 would now repeat ids[1]).
    let (_, first) = send(app.req(Method::GET, "/v1/jobs?limit=2", &key)).await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a cursor to the next page");
    submit().await;
    let (s, next) = send(app.req(
        Method::GET,
        &format!("/v1/jobs?limit=2&cursor={cursor}"),
        &key,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{next}");
    let got: Vec<&str> = next["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[0].as_str()], "the rest, once");
    assert!(next["next_cursor"].is_null(), "the last page: {next}");
    // A page that is exactly full is the last one as well.
    let (_, all) = send(app.req(Method::GET, "/v1/jobs?limit=4", &key)).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 4);
    assert!(all["next_cursor"].is_null(), "{all}");
    // Another account's cursor lists only that account's jobs.
    let (_, theirs) =
        send(app.req(Method::GET, &format!("/v1/jobs?cursor={cursor}"), &other)).await;
    assert_eq!(theirs["jobs"].as_array().unwrap().len(), 0, "{theirs}");
    for query in [
        "cursor=abc".to_owned(),
        "cursor=12.not-a-uuid".to_owned(),
        // Before PostgreSQL's timestamps begin (29,700 BC), and past 9999.
        "cursor=-1000000000000000000.00000000-0000-0000-0000-000000000000".to_owned(),
        "cursor=300000000000000000.00000000-0000-0000-0000-000000000000".to_owned(),
        format!("cursor={cursor}&offset=2"),
    ] {
        let got = send(app.req(Method::GET, &format!("/v1/jobs?{query}"), &key)).await;
        assert_error(&got, 422, "invalid_cursor");
    }
    // A page of another size than asked for would be misread: refused.
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=201", "invalid_limit"),
        ("offset=-1", "invalid_offset"),
    ] {
        for path in ["/v1/jobs", "/v1/templates"] {
            let got = send(app.req(Method::GET, &format!("{path}?{query}"), &key)).await;
            assert_error(&got, 422, code);
        }
    }
    let (_, list) = send(app.req(Method::GET, &format!("/v1/jobs?job_id={}", ids[0]), &key)).await;
    assert_eq!(list["jobs"][0]["job_id"], ids[0].as_str());
    let (_, list) =
        send(app.req(Method::GET, &format!("/v1/jobs?job_id={}", ids[0]), &other)).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);

    let (s, detail) = send(app.req(Method::GET, &format!("/v1/jobs/{}", ids[0]), &key)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(detail["status"], "NEW");
    assert_eq!(detail["file_name"], "inv.pdf");
    assert_eq!(detail["credits_charged"], 0);
    assert_error(
        &send(app.req(Method::GET, &format!("/v1/jobs/{}", ids[0]), &other)).await,
        404,
        "job_not_found",
    );
}

#[tokio::test]
async fn previews_render_pages_and_run_templates() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(example_pdf().to_vec()).file_name("invoice.pdf"),
    );
    let res = app
        .req(Method::POST, "/v1/preview/render", &key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/png");
    let png = res.bytes().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let img = image::load_from_memory(&png).unwrap();
    // A4 at 100 DPI is about 827 x 1169 pixels.
    assert!(
        (820..835).contains(&img.width()) && (1160..1175).contains(&img.height()),
        "{}x{}",
        img.width(),
        img.height()
    );

    // An image sample is shown as it is: a TIFF's page (browsers do not
    // show TIFF), a PNG's only one.
    let source = image::load_from_memory(example_png()).unwrap();
    let mut tiff = std::io::Cursor::new(Vec::new());
    source
        .write_to(&mut tiff, image::ImageFormat::Tiff)
        .unwrap();
    let render = |doc: Vec<u8>, name: &'static str, page: &'static str| {
        let form = multipart::Form::new()
            .text("page", page)
            .part("file", multipart::Part::bytes(doc).file_name(name));
        app.req(Method::POST, "/v1/preview/render", &key)
            .multipart(form)
            .send()
    };
    for (doc, name) in [
        (tiff.get_ref().clone(), "scan.tiff"),
        (example_png().to_vec(), "scan.png"),
    ] {
        let res = render(doc.clone(), name, "1").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert_eq!(res.headers()["content-type"], "image/png");
        let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (source.width(), source.height()),
            "{name}"
        );
        let res = render(doc, name, "2").await.unwrap();
        let got = (res.status(), res.json::<serde_json::Value>().await.unwrap());
        assert_error(&got, 422, "corrupt_document");
        assert!(
            got.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("page 2 does not exist; the document has 1"),
            "{}",
            got.1
        );
    }
    // Past the pages a preview reads.
    let res = render(example_pdf().to_vec(), "invoice.pdf", "21")
        .await
        .unwrap();
    let got = (res.status(), res.json::<serde_json::Value>().await.unwrap());
    assert_error(&got, 422, "invalid_page");

    let template = example_template();
    let spec = json!({"fields": template["fields"], "keywords": template["keywords"], "languages": template["languages"]});
    let form = multipart::Form::new()
        .text("template", spec.to_string())
        .part(
            "file",
            multipart::Part::bytes(example_pdf().to_vec()).file_name("invoice.pdf"),
        );
    let res = app
        .req(Method::POST, "/v1/preview/extract", &key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (s, text) = (res.status(), res.text().await.unwrap());
    assert_eq!(s, StatusCode::OK, "{text}");
    // `result` as a webhook would have it: in the template's order.
    let order = [
        "invoice_number",
        "invoice_date",
        "total",
        "vendor",
        "line_items",
    ];
    assert_eq!(keys_in_order(&text, &["result"]), order);
    let located = keys_in_order(&text, &["fields"]);
    assert!(located.len() >= 3, "{text}");
    assert_eq!(
        located,
        order
            .iter()
            .copied()
            .filter(|f| located.iter().any(|l| l == f))
            .collect::<Vec<&str>>(),
        "{text}"
    );
    let out: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(out["result"]["invoice_number"], "INV-2026-0042");
    assert_eq!(out["result"]["invoice_date"], "2026-11-14");
    assert_eq!(out["result"]["total"], 316.5);
    assert_eq!(out["missing_required"], json!([]));

    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(b"GIF89a....".to_vec()).file_name("x.gif"),
    );
    assert_error(
        &send(
            app.req(Method::POST, "/v1/preview/render", &key)
                .multipart(form),
        )
        .await,
        415,
        "unsupported_document_type",
    );
    let form = multipart::Form::new().text("template", "{}");
    assert_error(
        &send(
            app.req(Method::POST, "/v1/preview/extract", &key)
                .multipart(form),
        )
        .await,
        422,
        "missing_field",
    );

    // Previews keep the configured extraction limits.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_pixels_per_page = 10_000).await;
    let (_, key) = app.account(10).await;
    for (path, doc, code) in [
        ("/v1/preview/render", example_pdf(), "page_too_large"),
        ("/v1/preview/extract", example_png(), "image_too_large"),
    ] {
        let form = multipart::Form::new()
            .text("template", spec.to_string())
            .part(
                "file",
                multipart::Part::bytes(doc.to_vec()).file_name("doc"),
            );
        assert_error(
            &send(app.req(Method::POST, path, &key).multipart(form)).await,
            422,
            code,
        );
    }
}

#[tokio::test]
async fn a_preview_that_does_not_stop_is_given_up() {
    // A sample reads for page_time_limit_secs in all (1 s here) and is
    // given up after twice that: a page of 4,000 page-sized fills takes
    // some 10 s to render (let through the overdraw check) and cannot be
    // interrupted, so the answer comes at 2 s.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.page_time_limit_secs = 1;
        c.max_page_overdraw = 1_000_000;
    })
    .await;
    let (_, key) = app.account(10).await;
    let template = example_template();
    let spec = json!({"fields": template["fields"], "languages": template["languages"]});
    let form = multipart::Form::new()
        .text("template", spec.to_string())
        .part(
            "file",
            multipart::Part::bytes(pdf_painting_page(4000)).file_name("drawing.pdf"),
        );
    // The gauge is process-wide: read before, so that what counts is this
    // preview's increase (no other test of this binary runs a preview past
    // its limit, so nothing else moves it meanwhile).
    let abandoned = || paperhook_core::metrics::EXTRACTIONS_ABANDONED.get();
    let before = abandoned();
    let started = std::time::Instant::now();
    let got = send(
        app.req(Method::POST, "/v1/preview/extract", &key)
            .multipart(form),
    )
    .await;
    // Read at once: the render still running ends some 10 s in, and then
    // stops being counted.
    let answered_after = started.elapsed();
    let after = abandoned();
    assert_error(&got, 422, "document_timeout");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not stop within 2 s"),
        "{}",
        got.1
    );
    // It did not wait for the render: the answer came at about 2 s (6 s
    // leaves room for a loaded debug build, well short of the render)...
    assert!(
        answered_after < std::time::Duration::from_secs(6),
        "answered after {answered_after:?}: the render was waited for"
    );
    // ...which still runs, and is counted.
    assert!(
        after > before,
        "the abandoned render is not counted ({before} before, {after} after {answered_after:?})"
    );
}

#[tokio::test]
async fn previews_past_the_limit_answer_503_until_a_place_is_free() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.preview_max_concurrent = 1;
        c.max_page_overdraw = 1_000_000;
    })
    .await;
    let (_, key) = app.account(10).await;
    let render = |pdf: Vec<u8>| {
        app.req(Method::POST, "/v1/preview/render", &key).multipart(
            multipart::Form::new()
                .part("file", multipart::Part::bytes(pdf).file_name("sample.pdf")),
        )
    };
    // A page of 3,000 page-sized fills: about half a second to render at 100 DPI.
    // Probes (a 1-page invoice) until one is turned away; a probe may take
    // the place before the slow upload has arrived, which turns the slow
    // one away instead: then it starts again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (slow, busy) = 'outer: loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no preview was turned away"
        );
        let slow = tokio::spawn(render(pdf_painting_page(3000)).send());
        while !slow.is_finished() {
            let res = render(example_pdf().to_vec()).send().await.unwrap();
            if res.status() == StatusCode::SERVICE_UNAVAILABLE {
                break 'outer (slow, res);
            }
            assert_eq!(res.status(), StatusCode::OK);
        }
        let lost = slow.await.unwrap().unwrap();
        assert_eq!(
            lost.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "a preview ran beside another"
        );
    };
    let retry_after: u64 = busy.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(body["error"]["code"], "previews_busy", "{body}");
    // The slow one was not disturbed, and its place is free again after it.
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    let res = render(example_pdf().to_vec()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// How many pages a preview reads and the resolution it renders at are
/// settings (`preview_max_pages`, `preview_dpi`).
#[tokio::test]
async fn preview_pages_and_resolution_are_settings() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        (c.preview_max_pages, c.preview_dpi) = (1, 72);
    })
    .await;
    let (_, key) = app.account(10).await;
    let render = |page: &'static str| {
        let form = multipart::Form::new().text("page", page).part(
            "file",
            multipart::Part::bytes(example_pdf().to_vec()).file_name("invoice.pdf"),
        );
        app.req(Method::POST, "/v1/preview/render", &key)
            .multipart(form)
            .send()
    };
    let res = render("1").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
    // A4 at 72 DPI is 595 x 842 points.
    assert!(
        (590..600).contains(&img.width()) && (837..847).contains(&img.height()),
        "{}x{}",
        img.width(),
        img.height()
    );
    let res = render("2").await.unwrap();
    let got = (res.status(), res.json::<serde_json::Value>().await.unwrap());
    assert_error(&got, 422, "invalid_page");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("first 1 pages") && message.contains("preview_max_pages"),
        "{message}"
    );
}

/// A template to test over `max_json_bytes` is a body too large, as the
/// same template sent to `/v1/templates` is: `413 body_too_large`.
#[tokio::test]
async fn a_previewed_template_over_max_json_bytes_is_413() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_json_bytes = 4096).await;
    let (_, key) = app.account(10).await;
    let template = example_template();
    let mut spec = json!({"fields": template["fields"], "keywords": template["keywords"], "languages": template["languages"]}).to_string();
    spec.push_str(&" ".repeat(5000));
    let form = multipart::Form::new().text("template", spec).part(
        "file",
        multipart::Part::bytes(example_pdf().to_vec()).file_name("invoice.pdf"),
    );
    let got = send(
        app.req(Method::POST, "/v1/preview/extract", &key)
            .multipart(form),
    )
    .await;
    assert_error(&got, 413, "body_too_large");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_json_bytes"), "{message}");
}
